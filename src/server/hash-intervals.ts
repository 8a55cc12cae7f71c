// Sets of ring hash values, as sorted closed intervals: what a migration dump selects
// (RANGEPUSH) and what a source drops once its keys have moved (DROPRANGE). Pure.
import type { HashRange } from '../common/ring.js';

const TOP = 0xffffffff;

/** A ring range, and the index of the node it moves to (0 when there is one target). */
export interface LabelledRange extends HashRange {
  target?: number;
}

/** What a block of 2^16 hashes holds (HashIntervals.blocks). */
export const enum Block {
  None = 0,
  All = 1,
  Some = 2,
}

/** Sorted, non-overlapping closed intervals [lo, hi] of hash values, each with a label. */
export class HashIntervals {
  private readonly lo: number[] = [];
  private readonly hi: number[] = [];
  private readonly label: number[] = [];
  /** One more than the largest label: how many targets the ranges go to. */
  readonly labels: number;

  /** Ring ranges `start < hash <= end` (wrapping past the top; start === end is the whole ring). */
  constructor(ranges: readonly LabelledRange[]) {
    const parts: [number, number, number][] = [];
    let labels = 0;
    for (const { start, end, target = 0 } of ranges) {
      labels = Math.max(labels, target + 1);
      if (start === end) parts.push([0, TOP, target]);
      else if (start < end) parts.push([start + 1, end, target]);
      else {
        if (start < TOP) parts.push([start + 1, TOP, target]);
        parts.push([0, end, target]);
      }
    }
    this.labels = labels;
    parts.sort((a, b) => a[0] - b[0]);
    for (const [lo, hi, label] of parts) {
      const last = this.hi.length - 1;
      // Overlaps keep the first label; adjacent intervals merge only when their labels agree.
      if (last < 0 || lo > this.hi[last]!) this.pushPart(lo, hi, label);
      else if (hi > this.hi[last]!) this.pushPart(this.hi[last]! + 1, hi, label);
    }
  }

  private pushPart(lo: number, hi: number, label: number): void {
    const last = this.hi.length - 1;
    if (last >= 0 && lo === this.hi[last]! + 1 && label === this.label[last]) {
      this.hi[last] = hi;
      return;
    }
    this.lo.push(lo);
    this.hi.push(hi);
    this.label.push(label);
  }

  /** The label of the interval holding `hash`, or -1 if none does. */
  find(hash: number): number {
    let lo = 0;
    let hi = this.lo.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (hash < this.lo[mid]!) hi = mid - 1;
      else if (hash > this.hi[mid]!) lo = mid + 1;
      else return this.label[mid]!;
    }
    return -1;
  }

  has(hash: number): boolean {
    return this.find(hash) >= 0;
  }

  private coarse: Uint8Array | undefined;

  /**
   * What each block of 2^16 hashes (indexed by hash >>> 16) holds: NONE, ALL, or SOME (ask
   * has()). With a few hundred intervals nearly every block is NONE or ALL, so a walk over many
   * hashes (DROPRANGE) decides most of them with one array read instead of a binary search.
   */
  blocks(): Uint8Array {
    if (this.coarse !== undefined) return this.coarse;
    const out = new Uint8Array(65536);
    for (let i = 0; i < this.lo.length; i++) {
      const lo = this.lo[i]!;
      const hi = this.hi[i]!;
      for (let b = lo >>> 16; b <= hi >>> 16; b++) {
        const whole = lo <= b * 65536 && hi >= b * 65536 + 65535;
        out[b] = whole ? Block.All : Block.Some;
      }
    }
    this.coarse = out;
    return out;
  }

  /** How many intervals there are (0: no hash at all). */
  get count(): number {
    return this.lo.length;
  }

  /** The lowest and the highest hash held (undefined when empty). */
  get bounds(): [number, number] | undefined {
    return this.lo.length === 0 ? undefined : [this.lo[0]!, this.hi[this.hi.length - 1]!];
  }

  /** The hashes from `from` to `to` (inclusive) that these intervals hold. Labels are dropped. */
  clip(from: number, to: number): HashIntervals {
    const out = new HashIntervals([]);
    for (let i = 0; i < this.lo.length; i++) {
      const lo = Math.max(this.lo[i]!, from);
      const hi = Math.min(this.hi[i]!, to);
      if (lo <= hi) out.pushPart(lo, hi, 0);
    }
    return out;
  }

  /** As bytes: u32le lo, u32le hi per interval (labels are not kept). */
  encode(): Buffer {
    const out = Buffer.allocUnsafe(8 * this.lo.length);
    for (let i = 0; i < this.lo.length; i++) {
      out.writeUInt32LE(this.lo[i]!, 8 * i);
      out.writeUInt32LE(this.hi[i]!, 8 * i + 4);
    }
    return out;
  }

  /** The inverse of encode(); throws on bytes that encode() cannot have made. */
  static decode(bytes: Uint8Array): HashIntervals {
    if (bytes.length % 8 !== 0) throw new RangeError(`hash intervals: ${bytes.length} bytes is not a whole number of intervals`);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
    const out = new HashIntervals([]);
    for (let at = 0; at < bytes.length; at += 8) {
      const lo = view.getUint32(at, true);
      const hi = view.getUint32(at + 4, true);
      const last = out.hi.length - 1;
      if (lo > hi || (last >= 0 && lo <= out.hi[last]!)) throw new RangeError('hash intervals: not sorted closed intervals');
      out.pushPart(lo, hi, 0);
    }
    return out;
  }
}
