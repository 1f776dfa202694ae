// The run's event history: every delivery, crash, restart and completion is one line. The lines
// are hashed as they come (sha256 digest: same seed, same digest, byte for byte); the last few
// are kept so a failure can show what led to it.
import { createHash, type Hash } from "node:crypto";

const TAIL_LINES = 400;

export class Trace {
  private readonly hash: Hash = createHash("sha256");
  private readonly tail: string[] = [];
  private count = 0;

  constructor(private readonly echo?: (line: string) => void) {}

  record(nowUs: number, line: string): void {
    const text = `${nowUs} ${line}`;
    this.hash.update(text);
    this.hash.update("\n");
    // A ring: the slot of line k is k % TAIL_LINES.
    this.tail[this.count % TAIL_LINES] = text;
    this.count++;
    this.echo?.(text);
  }

  get lineCount(): number {
    return this.count;
  }

  lastLines(n: number): string[] {
    const lines: string[] = [];
    const first = Math.max(0, this.count - Math.min(n, TAIL_LINES));
    for (let k = first; k < this.count; k++) lines.push(this.tail[k % TAIL_LINES]!);
    return lines;
  }

  /** Finishes the hash; call once, at the end of the run. */
  digest(): string {
    return this.hash.digest("hex");
  }
}
