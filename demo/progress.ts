import type { WriteStream } from "node:tty";

/**
 * ProgressView prints a block of status lines once a second. On a terminal it redraws the block
 * in place; elsewhere (a pipe, a CI log) it appends the lines with a timestamp, so logs stay
 * readable.
 */
export class ProgressView {
  private drawn = 0;

  /** Creates a view writing to `out` (stdout, or stderr under --json). */
  constructor(private readonly out: NodeJS.WriteStream | WriteStream) {}

  /** Shows `lines` as the current state, `elapsedS` seconds into the run. */
  update(elapsedS: number, lines: readonly string[]): void {
    if (this.out.isTTY) {
      if (this.drawn > 0) this.out.write(`\x1b[${this.drawn}A`);
      for (const line of [`  t=${elapsedS.toFixed(0)}s`, ...lines]) this.out.write(`\x1b[2K  ${line}\n`);
      this.drawn = lines.length + 1;
    } else {
      for (const line of lines) this.out.write(`  [${elapsedS.toFixed(0).padStart(3)}s] ${line}\n`);
    }
  }

  /** Leaves the last drawn block on screen and starts fresh below it. */
  done(): void {
    this.drawn = 0;
  }
}
