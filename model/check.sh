#!/usr/bin/env bash
# Runs the model checks of model/checks.txt by hand (npm test runs them through
# test/model/lease-model.test.ts). Needs spin and a C compiler (Debian: apt-get install spin gcc).
#
#   model/check.sh                 every check: one summary line each
#   model/check.sh NAME...         the named checks, with the log of each counterexample
#   model/check.sh --save NAME...  also write model/trails/NAME.txt (the log, with the command that
#                                  replays NAME.trail step by step) and NAME.trail
# Counterexamples are searched breadth-first where checks.txt says bfs, which finds the shortest
# one; MEMLIM=3000 (MB) lets a breadth-first search go further. SEARCH=bfs forces it.
# EXTRA adds flags to every check, for the experiments of docs/model.md ("How tight"), e.g.
#   EXTRA=-DMARGIN_TICKS=1 model/check.sh lease
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
save=0
if [[ "${1:-}" == "--save" ]]; then save=1; shift; fi
memlim="${MEMLIM:-512}"
work="$(mktemp -d "${TMPDIR:-/tmp}/prl-model-XXXXXX")"
trap 'rm -rf "$work"' EXIT

format_trail() { # spin -t output -> "t=N event" lines; the model prints "tick" at every server tick
  awk 'BEGIN { t = 0 } /^[ \t]*tick$/ { t++; next }
       /START OF CYCLE/ { print "t=" t " (the run repeats from here forever)"; next }
       { sub(/^[ \t]+/, "") }
       /^(holder|BACKEND|OPERATOR|VIOLATION|the backend|\(|not ours|no plan|refused|renewed|partition)/ { print "t=" t " " $0 }'
}

status=0
while read -r name expect violation search flags; do
  [[ -z "$name" || "$name" == \#* ]] && continue
  if [[ $# -gt 0 ]] && ! printf '%s\n' "$@" | grep -qx "$name"; then continue; fi
  search="${SEARCH:-$search}"
  flags="$flags${EXTRA:+ $EXTRA}"
  dir="$work/$name"; mkdir -p "$dir"; cp "$here/lease.pml" "$dir/"
  cd "$dir"
  # shellcheck disable=SC2086 # flags are words
  spin -a $flags lease.pml > spin.out
  cc_flags=(-w "-DMEMLIM=$memlim" -o pan pan.c)
  pan_flags=(-m1000000 -w23)
  if [[ "$flags" == *-DCFG_FAIR* ]]; then pan_flags=(-a "${pan_flags[@]}"); else cc_flags=(-DSAFETY "${cc_flags[@]}"); fi
  # (breadth-first search finds no acceptance cycles: liveness checks always search depth-first)
  if [[ "$search" == bfs && "$flags" != *-DCFG_FAIR* ]]; then cc_flags=(-DBFS "${cc_flags[@]}"); fi
  if [[ "$expect" == verify ]]; then cc_flags=(-O1 "${cc_flags[@]}"); else cc_flags=(-O0 "${cc_flags[@]}"); fi
  cc "${cc_flags[@]}"
  ./pan "${pan_flags[@]}" > pan.out
  errors="$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' pan.out)"
  states="$(sed -n 's/^ *\([0-9]*\) states, stored.*/\1/p' pan.out)"
  depth="$(sed -n 's/.*depth reached \([0-9]*\).*/\1/p' pan.out)"
  secs="$(sed -n 's/^pan: elapsed time \(.*\) seconds/\1/p' pan.out)"
  note=""
  grep -q "max search depth too small" pan.out && note=" (depth bound reached: incomplete)"
  grep -q "reached -DMEMLIM bound" pan.out && note=" (memory bound reached: incomplete)"
  found="-"
  if [[ "$errors" != 0 && -f lease.pml.trail ]]; then
    # shellcheck disable=SC2086
    spin -t $flags lease.pml | format_trail > trail.txt
    if [[ "$flags" == *-DCFG_FAIR* ]]; then found=acceptance-cycle; else found="$(sed -n 's/.*VIOLATION \([a-z-]*\).*/\1/p' trail.txt | head -1)"; fi
  fi
  if [[ "$expect" == verify ]]; then ok=$([[ "$errors" == 0 && -z "$note" ]] && echo ok || echo FAILED)
  else ok=$([[ "$found" == "$violation" ]] && echo ok || echo FAILED); fi
  [[ "$ok" == ok ]] || status=1
  printf '%-27s %-8s %-6s errors %s, found %-16s %9s states, depth %7s, %s s%s\n' "$name" "$expect" "$ok" "$errors" "$found" "$states" "$depth" "$secs" "$note"
  if [[ $# -gt 0 && -f trail.txt ]]; then sed 's/^/    /' trail.txt; fi
  if [[ $save == 1 && -f trail.txt ]]; then
    mkdir -p "$here/trails"
    {
      echo "# $name ($expect): the counterexample of spin $flags ($search search)."
      echo "# Replay: d=\$(mktemp -d) && cp model/lease.pml \$d && cp model/trails/$name.trail \$d/lease.pml.trail && (cd \$d && spin -t -p $flags lease.pml)"
      cat trail.txt
    } > "$here/trails/$name.txt"
    cp lease.pml.trail "$here/trails/$name.trail"
  fi
  cd "$here"
done < "$here/checks.txt"
exit $status
