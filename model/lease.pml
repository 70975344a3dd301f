/*
 * The lease protocol of partitioned-rate-limiter (version 2), as a SPIN model.
 *
 * docs/model.md explains it: what is modelled and what is abstracted away, how each variable maps
 * to the TypeScript, and the results. model/check.sh runs it by hand; test/model/lease-model.test.ts
 * runs every configuration and every broken variant in `npm test`.
 *
 * One process does everything, one atomic step at a time: the server clock ticks, a holder admits,
 * a holder makes a backend call, a late reply arrives, or a fault happens. SPIN tries every order
 * of steps, so a holder that takes no step for a while is paused (for as long as SPIN likes, longer
 * than the TTL), one that never steps again has crashed. Times are countdowns (ticks left) or
 * capped counters, so the state space is finite without a horizon: the check covers runs of any
 * length.
 *
 * Configurations (exactly one -D):
 *   CFG_LEASE     2 holders, 1 partition: hand-over, deadlines, drift, lost and late replies,
 *                 pauses, crashes, (a) state loss with the plan, (b) snapshot restore
 *   CFG_EPOCH     2 holders, 1 partition: plan replacement (epochs) and (a); no drift, no (b)
 *   CFG_SETTINGS  2 holders configured with different slicesPerInterval, 1 partition, (a)
 *   CFG_FAIR      2 holders, 2 partitions, fair share: liveness (LTL), no faults
 * Broken variants, one guard removed each (add one -D): NO_QUIET, REPLY_DEADLINE, NO_GRACE,
 * NO_BACKEND_EPOCH, NO_SETTINGS_CHECK, NO_MARGIN, NO_STRETCH, NO_DEADLINE_CHECK,
 * NO_SWITCH_GRACE, NO_EPOCH_RENEW_CHECK, NO_GIVE_BACK.
 * Proposed fixes of the two holes the model found in the protocol as specified (docs/model.md,
 * "Findings"): FIX_UNIQUE_EPOCH, FIX_LOSS_SWITCH_GRACE.
 * Knobs for experiments: TTL, MARGIN_TICKS, QUIET_TICKS, SWITCH_TICKS, DRIFT_TICKS, NP, NO_LOSS,
 * NO_RESTORE, NO_DRIFT.
 */

/* ------------------------------------------------------------------ configuration */

#define NH 2
#ifdef CFG_EPOCH
/* Epochs are about plans, not clocks; a restore keeps the plan (CFG_LEASE checks it). Both would
   multiply the states by about 12. */
#define NO_DRIFT
#define NO_RESTORE
#endif
#ifndef NP
#ifdef CFG_FAIR
#define NP 2
#else
#define NP 1
#endif
#endif

#ifdef CFG_SETTINGS
/* Holder 0 runs slicesPerInterval 2: 2 units per slice of 2 ticks. Holder 1 runs 4: 1 unit per
   slice of 1 tick. The same limit; each is safe on its own. The property is the quota itself: at
   most C units per partition in any I ticks. No drift here: this check is about the settings. */
#define DRIFT 0
#define I 4
#define C 4
#define SL_OF(h) ((h) == 0 -> 2 : 1)
#define U_OF(h) ((h) == 0 -> 2 : 1)
#define QUIET_OF(h) SL_OF(h)
#define SLMAX 2
#define QUOTA_MONITOR
#else
#define S 2             /* one slice of the plan, server ticks; c/k = 1 admission per slice */
#define K 3             /* slicesPerInterval */
#define I (K * S)       /* one interval */
#if defined(CFG_FAIR) || defined(NO_DRIFT)
#define DRIFT 0
#elif defined(DRIFT_TICKS)
#define DRIFT DRIFT_TICKS  /* for experiments: docs/model.md, "How tight" */
#else
#define DRIFT 1         /* per holder: one local tick that lasts 0 or 2 server ticks */
#endif
#ifdef NO_STRETCH
#define SL_OF(h) S      /* broken: the local window is not stretched by the drift */
#else
#define SL_OF(h) (S + DRIFT)  /* sliceMs: one slice stretched by the drift, on the local clock */
#endif
#define U_OF(h) 1
#define SLMAX (S + DRIFT)
#ifdef NO_QUIET
#define QUIET_OF(h) 0   /* broken: released right after the last admission */
#elif defined(QUIET_TICKS)
#define QUIET_OF(h) QUIET_TICKS  /* for experiments: docs/model.md, "How tight" */
#else
#define QUIET_OF(h) SLMAX  /* quietMs: local ticks without admission before a release */
#endif
#define SLICE_MONITOR
#endif

#ifndef TTL
#define TTL 8           /* leaseTtlMs, server ticks */
#endif
#ifdef NO_MARGIN
#define MARGIN 0        /* broken: the local deadline is the server's expiry */
#elif defined(MARGIN_TICKS)
#define MARGIN MARGIN_TICKS  /* for experiments: docs/model.md, "How tight" */
#else
#define MARGIN (SLMAX + DRIFT)  /* safetyMarginMs: one (stretched) slice + the drift over a TTL */
#endif
#define VALID (TTL - MARGIN)    /* a local deadline's distance from its send time */
#define TO (MARGIN + 1) /* backendTimeoutMs: a reply may come this late (longer than the margin) */
#define RENEW_EVERY (TTL / 3)  /* renewEveryMs: renew once the deadline is this much older */

#ifdef NO_SWITCH_GRACE
#define SWITCH_GRACE 0
#elif defined(SWITCH_TICKS)
#define SWITCH_GRACE SWITCH_TICKS  /* for experiments: docs/model.md, "How tight" */
#else
#define SWITCH_GRACE (TTL + I)  /* switchGraceMs: old leases expire, then one more interval */
#endif
#ifdef NO_GRACE
#define CREATE_GRACE 0
#elif defined(FIX_LOSS_SWITCH_GRACE)
#define CREATE_GRACE (TTL + I)  /* proposed: a switch grace, the lost plan may have been another */
#else
#define CREATE_GRACE TTL    /* creationGraceMs("lost"): the plan's TTL */
#endif
#define EPOCH_GRACE TTL     /* backendEpochGraceMs */

/*
 * Epoch numbers. As briefed, a plan stored where none is gets epoch 1 and a replacement the next
 * number (here bounded: a plan is replaced once per life). With FIX_UNIQUE_EPOCH, every stored
 * plan gets an epoch no holder has run under (e.g. from the server clock, like the fence counter),
 * so a plan re-created after state loss is seen as a change.
 */
#ifdef FIX_UNIQUE_EPOCH
/* Only "is it the stored epoch" matters, so epochs are kept as that: plan_e is always 1, and
   he[h] / l_e[p] are 1 while current; storing a new epoch makes every one of them stale. */
#define NEW_EPOCH(e) \
  plan_e = 1; he[0] = 0; he[1] = 0; \
  for (tj : 0 .. NP - 1) { l_e[tj] = 0 } \
  tj = 0
#define REPLACEABLE (plan_c == 0)
#else
#define NEW_EPOCH(e) plan_e = (e)
#define REPLACEABLE (plan_e == 1)
#endif

#if defined(CFG_EPOCH) || defined(CFG_FAIR)
#define FOLLOW          /* holders follow the stored plan: a new epoch is adopted, not refused */
#endif
#ifdef CFG_LEASE
#define LATE_REPLIES    /* renewal replies may arrive late (up to the timeout) */
#endif

/* ------------------------------------------------------------------ state */

#define IX(h, p) ((h) * NP + (p))
#define NS (NH * NP)

/* A holder's view of one partition: HeldPartition in the pacer, or retiring. */
#define FREE 0
#define HELD 1          /* in the pacer: admits while vu > 0 */
#define DRAIN 2         /* retired (surplus, close, fair share, expired): quiet, then release */
byte st[NS];
byte vu[NS];            /* HeldPartition.validUntil, as local ticks left; 0: passed */
byte since[NS];         /* PartitionWindow: local ticks since the last admission, capped at SLMAX */
byte sc[NS];            /* the plan (content) the lease runs under */
byte late[NS];          /* LATE_REPLIES: 1 + local ticks since a renewal whose OK is still coming; 0: none */

bool ready[NH];         /* the plan is known (ensurePlan answered) */
bool dead[NH];          /* refused with PlanMismatchError: admits nothing, ever */
byte he[NH];            /* the plan epoch the holder runs under */
byte hc[NH];            /* the plan (content) it runs under; CFG_SETTINGS: its settings */
byte drift_left[NH];
bool bk[NH];            /* CFG_FAIR: backing off after a refused acquire, until the next tick */
byte wants[NH];         /* CFG_FAIR: the published demand (HolderRecord.wants) */

/* The backend. */
bool plan_ok;
byte plan_e;            /* StoredPlan.epoch */
byte plan_c;            /* the stored plan's content (CFG_SETTINGS: its settings) */
byte grace;             /* the grace key: ticks left, 0 = none */
bool id_new;            /* the server identity (run_id) differs from the one stored with the plan */
byte l_own[NP];         /* holder + 1; 0 = free */
byte l_exp[NP];         /* ticks until the lease expires; 0 = free */
byte l_e[NP];           /* Lease.epoch */

/* The properties' memory (not part of the protocol). */
#ifdef SLICE_MONITOR
byte last_adm[NP];      /* server ticks since the last admission on p, capped at S */
#endif
#ifdef CFG_EPOCH
byte since_c[2];        /* server ticks since the last admission under plan content c, capped at I */
#endif
#ifdef QUOTA_MONITOR
byte hist[NP * I];      /* units admitted on p, j ticks ago: hist[p * I + j] */
#endif
#ifdef CFG_FAIR
bool tk;                /* flips at every tick: selects the runs in which time keeps passing */
#endif

/* Scratch variables of the atomic steps: always 0 between steps, so they add no states. (Not
   `hidden`: the shortest-trail search (BFS) does not allow hidden variables.) */
byte ti, tj, td, tx;

/* ------------------------------------------------------------------ the properties */

#define VIOLATION(msg) printf(msg); assert(false)

inline admit(h, p) {
#ifdef SLICE_MONITOR
  /* Which guard failed, for the message: a lease whose window counter is at its cap has not
     admitted for a full stretched slice (at least S server ticks, whatever the drift), so the
     admission within S ticks was under another lease (another holder, or this one before it
     released and re-acquired): a hand-over. Below the cap it was this lease: its own window. */
  if
  :: last_adm[p] < S && since[IX(h, p)] >= SLMAX ->
     VIOLATION("VIOLATION hand-over: two leases admitted on one partition within one slice\n")
  :: last_adm[p] < S && since[IX(h, p)] < SLMAX ->
     VIOLATION("VIOLATION window: one lease admitted twice on one partition within one slice\n")
  :: else
  fi;
  last_adm[p] = 0;
#endif
#ifdef CFG_EPOCH
  if
  :: since_c[1 - sc[IX(h, p)]] < I ->
     VIOLATION("VIOLATION epochs: admissions under two plans within one interval\n")
  :: else
  fi;
  since_c[sc[IX(h, p)]] = 0;
#endif
#ifdef QUOTA_MONITOR
  td = U_OF(h);
  for (ti : 0 .. I - 1) { td = td + hist[p * I + ti] }
  if
  :: td > C -> VIOLATION("VIOLATION quota: more than c units on one partition within one interval\n")
  :: else
  fi;
  hist[p * I] = hist[p * I] + U_OF(h);
  td = 0; ti = 0;
#endif
  since[IX(h, p)] = 0;
  printf("holder %d admits on partition %d (plan %d, deadline in %d)\n", h, p, sc[IX(h, p)], vu[IX(h, p)])
}

/* ------------------------------------------------------------------ fair share (CFG_FAIR) */

#define USABLE(h, p) (st[IX(h, p)] == HELD && vu[IX(h, p)] > 0)
#if NP == 1
#define NHELD(h) (USABLE(h, 0) -> 1 : 0)
#define HAS_FREE_SLOT(h) (st[IX(h, 0)] == FREE)
#else
#define NHELD(h) ((USABLE(h, 0) -> 1 : 0) + (USABLE(h, 1) -> 1 : 0))
#define HAS_FREE_SLOT(h) (st[IX(h, 0)] == FREE || st[IX(h, 1)] == FREE)
#endif
/* Weighted max-min share with equal weights and two holders: both wanting split NP evenly. */
#define SHARE(h) (wants[h] == 0 -> 0 : (wants[1 - (h)] == 0 -> NP : NP / 2))
#define BELOW(h) (NHELD(h) < SHARE(h))
#ifdef NO_GIVE_BACK
#define ABOVE(h) false  /* broken: a holder above its share keeps what it has */
#else
#define ABOVE(h) (NHELD(h) > SHARE(h))
#endif

/* ------------------------------------------------------------------ guards of the steps */

#ifdef NO_DEADLINE_CHECK
#define IN_TIME(h, p) true  /* broken: the admission does not re-check the deadline */
#else
#define IN_TIME(h, p) (vu[IX(h, p)] > 0)
#endif
#define CAN_ADMIT(h, p) (!dead[h] && st[IX(h, p)] == HELD && IN_TIME(h, p) && since[IX(h, p)] >= SL_OF(h))
#define RENEW_DUE(h, p) (st[IX(h, p)] == HELD && late[IX(h, p)] == 0 && vu[IX(h, p)] <= VALID - RENEW_EVERY)
#ifdef CFG_FAIR
#define CAN_RENEW(h, p) (RENEW_DUE(h, p) && vu[IX(h, p)] > 0)
#define CAN_RETIRE(h, p) (st[IX(h, p)] == HELD && (vu[IX(h, p)] == 0 || ABOVE(h)))
#define CAN_ACQUIRE(h) (ready[h] && !dead[h] && !bk[h] && BELOW(h) && HAS_FREE_SLOT(h))
#else
#define CAN_RENEW(h, p) RENEW_DUE(h, p)
#define CAN_RETIRE(h, p) (st[IX(h, p)] == HELD)
#define CAN_ACQUIRE(h) (ready[h] && !dead[h] && HAS_FREE_SLOT(h))
#endif
#define CAN_RELEASE(h, p) (st[IX(h, p)] == DRAIN && since[IX(h, p)] >= QUIET_OF(h) && late[IX(h, p)] == 0)
#define CAN_ENSURE(h) (!ready[h] && !dead[h])

#ifdef CFG_FAIR
#define BACK_OFF(h) bk[h] = true
#else
#define BACK_OFF(h) skip    /* only the liveness check reads it: elsewhere it would only add states */
#endif

#ifdef CFG_FAIR
/* Maximal progress: time does not pass while a holder has something it must do now (nobody
   pauses or crashes, the backend answers at once). */
#define SLOT_URGENT(h, p) (CAN_RELEASE(h, p) || CAN_RENEW(h, p) || CAN_RETIRE(h, p))
#define HOLDER_URGENT(h) (CAN_ENSURE(h) || CAN_ACQUIRE(h))
#define URGENT (SLOT_URGENT(0, 0) || SLOT_URGENT(0, 1) || SLOT_URGENT(1, 0) || SLOT_URGENT(1, 1) || HOLDER_URGENT(0) || HOLDER_URGENT(1))
#else
#define URGENT false
#endif

/* ------------------------------------------------------------------ the steps */

inline clear_slot(x) {
  st[x] = FREE; vu[x] = 0; since[x] = 0; sc[x] = 0; late[x] = 0
}

/* Every backend call first compares the server identity with the stored one (snapshot restore),
   and starts a grace before it does anything else. */
inline identity_check() {
#ifdef NO_BACKEND_EPOCH
  id_new = false        /* broken: the new identity is not noticed */
#else
  if
  :: id_new -> id_new = false; if :: grace < EPOCH_GRACE -> grace = EPOCH_GRACE :: else fi;
     printf("the backend sees a new server identity: grace %d\n", grace)
  :: else
  fi
#endif
}

/* One server tick; each holder's local tick lasts 1 server tick, or 0 or 2 while it has drift left. */
inline tick() {
  printf("tick\n");    /* the trail's log counts these for the time */
  for (ti : 0 .. NP - 1) {
    if
    :: l_exp[ti] > 1 -> l_exp[ti]--
    :: l_exp[ti] == 1 -> l_exp[ti] = 0; l_own[ti] = 0; l_e[ti] = 0
    :: else
    fi;
#ifdef SLICE_MONITOR
    if
    :: last_adm[ti] < S -> last_adm[ti]++
    :: else
    fi;
#endif
#ifdef QUOTA_MONITOR
    for (tj : 1 .. I - 1) { hist[ti * I + I - tj] = hist[ti * I + I - tj - 1] }
    hist[ti * I] = 0;
#endif
  }
  if :: grace > 0 -> grace-- :: else fi;
#ifdef CFG_EPOCH
  if :: since_c[0] < I -> since_c[0]++ :: else fi;
  if :: since_c[1] < I -> since_c[1]++ :: else fi;
#endif
#ifdef CFG_FAIR
  tk = !tk;
#endif
  for (ti : 0 .. NH - 1) {
    td = 1;
    if
    :: drift_left[ti] > 0 -> drift_left[ti]--; td = 0; printf("holder %d's clock stands still for a tick\n", ti)
    :: drift_left[ti] > 0 -> drift_left[ti]--; td = 2; printf("holder %d's clock jumps two ticks\n", ti)
    :: true
    fi;
#ifdef CFG_FAIR
    bk[ti] = false;
#endif
    for (tj : 0 .. NP - 1) {
      tx = IX(ti, tj);
      if :: vu[tx] > td -> vu[tx] = vu[tx] - td :: else -> vu[tx] = 0 fi;
      if
      :: st[tx] != FREE && since[tx] + td < SLMAX -> since[tx] = since[tx] + td
      :: st[tx] != FREE && since[tx] + td >= SLMAX -> since[tx] = SLMAX
      :: else
      fi;
      /* a late reply that has not come within the timeout is lost */
      if :: late[tx] > 0 && late[tx] + td <= TO + 1 -> late[tx] = late[tx] + td :: late[tx] > 0 -> late[tx] = 0 :: else fi
    }
  }
  ti = 0; tj = 0; td = 0; tx = 0
}

/* The OK of a renewal sent (late - 1) local ticks ago arrives. */
inline renewed(x) {
#ifdef REPLY_DEADLINE
  vu[x] = VALID;        /* broken: the deadline counts from the reply, not from the send */
#else
  if :: late[x] - 1 < VALID && vu[x] < VALID - (late[x] - 1) -> vu[x] = VALID - (late[x] - 1) :: else fi;
#endif
  late[x] = 0
}

/*
 * Holder h renews partition p (one heartbeat). The backend processes it at once: processing later
 * only moves the server's expiry later, which is safe. Then the reply arrives at once, or late
 * (LATE_REPLIES), or never (the call fails: the partition runs to its deadline).
 */
inline renew(h, p) {
  printf("holder %d renews partition %d\n", h, p);
  identity_check();
  if
  :: !plan_ok ->                               /* "no plan": read the plan again */
     if :: ready[h] = false; printf("  no plan stored: reads the plan again\n") :: printf("  (reply lost)\n") fi
  :: plan_ok && l_own[p] != h + 1 ->
     if :: clear_slot(IX(h, p)); printf("  not ours: stops at once\n") :: printf("  (reply lost)\n") fi
#ifdef NO_EPOCH_RENEW_CHECK
  :: plan_ok && l_own[p] == h + 1 ->          /* broken: old-epoch leases are renewed too */
#else
  :: plan_ok && l_own[p] == h + 1 && l_e[p] != plan_e ->  /* old epoch: refused; runs to its deadline */
     if :: ready[h] = false; printf("  refused, old epoch: runs to its deadline, reads the plan\n") :: printf("  (reply lost)\n") fi
  :: plan_ok && l_own[p] == h + 1 && l_e[p] == plan_e ->
#endif
     l_exp[p] = TTL;
     if
     :: late[IX(h, p)] = 1; renewed(IX(h, p)); printf("  renewed: deadline in %d\n", vu[IX(h, p)])
     :: printf("  renewed on the server, reply lost\n")
#ifdef LATE_REPLIES
     :: late[IX(h, p)] = 1; printf("  renewed on the server, the reply will be late\n")
#endif
     fi
  fi
}

/* Holder h releases partition p, once quiet. The call may be lost; either way the holder forgets it. */
inline release(h, p) {
  printf("holder %d releases partition %d\n", h, p);
  identity_check();
  if
  :: l_own[p] == h + 1 -> if :: l_own[p] = 0; l_exp[p] = 0; l_e[p] = 0 :: printf("  (the release is lost)\n") fi
  :: else
  fi;
  clear_slot(IX(h, p))
}

inline grant(h, p) {
  l_own[p] = h + 1; l_exp[p] = TTL; l_e[p] = plan_e;
  st[IX(h, p)] = HELD; vu[IX(h, p)] = VALID; since[IX(h, p)] = SLMAX; sc[IX(h, p)] = hc[h];

  printf("holder %d acquires partition %d (epoch %d, deadline in %d)\n", h, p, plan_e, VALID)
}

/* Holder h's tryAcquire; a grant whose reply is lost is a lease the holder never uses. */
inline acquire(h) {
  identity_check();
  if
  :: !plan_ok -> ready[h] = false; printf("holder %d: acquire finds no plan\n", h)
  :: plan_ok && plan_e != he[h] -> ready[h] = false; printf("holder %d: acquire finds the plan changed\n", h)
  :: plan_ok && plan_e == he[h] && grace > 0 -> BACK_OFF(h); printf("holder %d: acquire refused, grace\n", h)
  :: plan_ok && plan_e == he[h] && grace == 0 ->
     if
     :: l_exp[0] == 0 && st[IX(h, 0)] == FREE -> grant(h, 0)
#if NP > 1
     :: l_exp[1] == 0 && st[IX(h, 1)] == FREE -> grant(h, 1)
#endif
     :: else -> BACK_OFF(h); printf("holder %d: acquire finds nothing free\n", h)
     fi
  fi
}

/* Holder h's ensurePlan: stores its plan if none is stored (with the creation grace), else compares. */
inline ensure_plan(h) {
  identity_check();
  if
  :: !plan_ok ->
     plan_ok = true; NEW_EPOCH(1); plan_c = hc[h]; id_new = false;
     if :: grace < CREATE_GRACE -> grace = CREATE_GRACE :: else fi;
     printf("holder %d stores its plan %d as epoch %d, grace %d\n", h, plan_c, plan_e, grace)
  :: else
  fi;
#ifdef FOLLOW
  he[h] = plan_e; hc[h] = plan_c; ready[h] = true;
  printf("holder %d runs under epoch %d (plan %d)\n", h, plan_e, plan_c)
#else
#ifdef NO_SETTINGS_CHECK
  he[h] = plan_e; ready[h] = true             /* broken: the settings are not in the plan */
#else
  if
  :: plan_c != hc[h] -> dead[h] = true; printf("holder %d: PlanMismatchError\n", h)
  :: else -> he[h] = plan_e; ready[h] = true; printf("holder %d runs under epoch %d\n", h, plan_e)
  fi
#endif
#endif
}

/* Everything one holder can do with one partition. */
#define SLOT_STEPS(h, p) \
  :: atomic { CAN_ADMIT(h, p) -> admit(h, p) } \
  :: atomic { CAN_RENEW(h, p) -> renew(h, p) } \
  :: atomic { late[IX(h, p)] > 0 -> if :: st[IX(h, p)] == HELD -> renewed(IX(h, p)); printf("holder %d: late renewal reply for partition %d, deadline in %d\n", h, p, vu[IX(h, p)]) :: else -> late[IX(h, p)] = 0 fi } \
  :: atomic { CAN_RETIRE(h, p) -> st[IX(h, p)] = DRAIN; printf("holder %d retires partition %d\n", h, p) } \
  :: atomic { CAN_RELEASE(h, p) -> release(h, p) }

#define HOLDER_STEPS(h) \
  :: atomic { CAN_ENSURE(h) -> ensure_plan(h) } \
  :: atomic { CAN_ACQUIRE(h) -> acquire(h) }

/* ------------------------------------------------------------------ the system */

active proctype world() {
  atomic {
    drift_left[0] = DRIFT; drift_left[1] = DRIFT;
#ifdef CFG_SETTINGS
    hc[1] = 1;
#endif
#ifdef SLICE_MONITOR
    for (ti : 0 .. NP - 1) { last_adm[ti] = S }
    ti = 0;
#endif
#ifdef CFG_EPOCH
    since_c[0] = I; since_c[1] = I;
#endif
#ifdef CFG_FAIR
    wants[0] = NP;
#endif
  }
  do
  :: atomic { !URGENT -> tick() }
  SLOT_STEPS(0, 0)
  SLOT_STEPS(1, 0)
#if NP > 1
  SLOT_STEPS(0, 1)
  SLOT_STEPS(1, 1)
#endif
  HOLDER_STEPS(0)
  HOLDER_STEPS(1)
#ifdef CFG_FAIR
  /* holder 1 starts wanting capacity at some time */
  :: atomic { wants[1] == 0 -> wants[1] = NP; printf("holder 1 starts wanting capacity\n") }
#else
  /* (a) state loss: plan, grace, leases and the stored identity are gone */
#ifndef NO_LOSS
  :: atomic {
       plan_ok -> plan_ok = false; plan_e = 0; plan_c = 0; grace = 0; id_new = false;
       printf("BACKEND LOSES EVERYTHING (plan, grace, leases)\n");
       for (ti : 0 .. NP - 1) { l_own[ti] = 0; l_exp[ti] = 0; l_e[ti] = 0 }
       ti = 0
     }
#endif
#if !defined(CFG_SETTINGS) && !defined(NO_RESTORE)
  /* (b) snapshot restore: the plan survives; each lease is kept, forgotten, or has an older
     (earlier) expiry; the server identity changes. The grace key stays: it is written with the
     plan, and a snapshot keeps absolute expiries, so a snapshot new enough to hold this plan
     holds its grace. (A grace started by an identity check may be older than the snapshot; the
     restore changes the identity again, so a new grace starts before anything is granted.) */
  :: atomic {
       plan_ok && !id_new ->
       printf("BACKEND RESTORED FROM A SNAPSHOT (new server identity)\n");
       for (ti : 0 .. NP - 1) {
         /* an earlier expiry than 1 tick from now frees the partition no sooner, so 1 stands for all */
         if
         :: true
         :: l_own[ti] != 0 -> l_own[ti] = 0; l_exp[ti] = 0; l_e[ti] = 0; printf("  partition %d's lease is forgotten\n", ti)
         :: l_exp[ti] > 1 -> l_exp[ti] = 1; printf("  partition %d's lease has an old expiry\n", ti)
         fi
       }
       id_new = true; ti = 0
     }
#endif
#endif
#ifdef CFG_EPOCH
  /* an operator replaces the plan: the next epoch, another content, the switch grace */
  :: atomic {
       plan_ok && REPLACEABLE -> NEW_EPOCH(plan_e + 1); plan_c = 1 - plan_c;
       if :: grace < SWITCH_GRACE -> grace = SWITCH_GRACE :: else fi;
       printf("OPERATOR REPLACES THE PLAN: plan %d, epoch %d, grace %d\n", plan_c, plan_e, grace)
     }
#endif
  od
}

#ifdef CFG_FAIR
/* STARVED(h): h wants capacity and holds less than its fair share (written without conditional
   expressions, whose "->" LTL would read as implication). */
#define HAS_ONE(h) (USABLE(h, 0) || USABLE(h, 1))
#define HAS_TWO(h) (USABLE(h, 0) && USABLE(h, 1))
#define STARVED(h) (wants[h] > 0 && ((wants[1 - (h)] == 0 && !HAS_TWO(h)) || (wants[1 - (h)] > 0 && !HAS_ONE(h))))
/* In every run in which time keeps passing, a starved holder eventually gets its share. */
ltl fair_share {
  ([]<> tk && []<> !tk) -> ([] (STARVED(1) -> <> !STARVED(1)) && [] (STARVED(0) -> <> !STARVED(0)))
}
#endif
