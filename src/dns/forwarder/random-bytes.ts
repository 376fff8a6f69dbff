/**
 * Random numbers for the forwarder's defences (query IDs, the pool socket a
 * query goes out on, the 0x20 case bits), from a buffer refilled from the
 * CSPRNG: randomInt per query costs more than the rest of a forward.
 */
import { randomFillSync } from "node:crypto";

export class RandomBytes {
  private readonly buf = Buffer.alloc(4096);
  private off = this.buf.length;

  /** One random byte. */
  byte(): number {
    if (this.off >= this.buf.length) {
      randomFillSync(this.buf);
      this.off = 0;
    }
    return this.buf[this.off++]!;
  }

  /** A random 16-bit number (a query ID). */
  u16(): number {
    return (this.byte() << 8) | this.byte();
  }

  /** A number from 0 to n - 1 (n <= 65536), uniformly: draws above the last whole multiple of n are redrawn. */
  below(n: number): number {
    const limit = 65536 - (65536 % n);
    for (;;) {
      const r = this.u16();
      if (r < limit) return r % n;
    }
  }
}
