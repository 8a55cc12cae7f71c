// A queue of received bytes for the push-style decoders. Chunks are only merged when a frame
// element is known to be complete, and a line is scanned for its newline once per byte, so
// a peer that dribbles bytes one at a time costs linear work, not quadratic.
//
// A pushed chunk may be borrowed: a view into memory its owner reuses (the listener's shared
// read buffer). own() copies what is still held of borrowed chunks, so the caller can return
// the memory; each byte is copied at most once, however many reads a large frame spans.

const EMPTY = Buffer.alloc(0);
const LF = 0x0a;

export class ByteQueue {
  /** Merged working buffer; bytes before `pos` are consumed. */
  head: Buffer = EMPTY;
  pos = 0;
  private tail: Buffer[] = [];
  private tailBytes = 0;
  /** Bytes after `pos` already known to contain no LF. */
  private scanned = 0;
  /** `head` is ours (merged, copied or empty), not a pushed chunk. */
  private headOwned = true;
  /** tail[0 .. ownedTail) are copies; the chunks after them were pushed since the last own(). */
  private ownedTail = 0;

  get available(): number {
    return this.head.length - this.pos + this.tailBytes;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    if (this.pos >= this.head.length && this.tailBytes === 0) {
      this.head = chunk;
      this.headOwned = false;
      this.pos = 0;
      this.scanned = 0;
    } else {
      this.tail.push(chunk);
      this.tailBytes += chunk.length;
    }
  }

  /** True when `n` contiguous bytes are readable at head[pos..]; merges pending chunks if needed. */
  ensure(n: number): boolean {
    const inHead = this.head.length - this.pos;
    if (inHead >= n) return true;
    if (inHead + this.tailBytes < n) return false;
    this.merge();
    return true;
  }

  /**
   * Index in `head` of the next LF at or after `pos`, or -1. Bytes already scanned are not
   * scanned again; `unscannedLength` reports how long the line is so far, for bounds checks.
   */
  indexOfLF(): number {
    const inHead = this.head.length - this.pos;
    if (this.scanned < inHead) {
      const i = this.head.indexOf(LF, this.pos + this.scanned);
      if (i >= 0) return i;
      this.scanned = inHead;
    }
    if (this.tailBytes === 0) return -1;
    // Look through the unmerged chunks; merge only once a newline is there.
    let seen = inHead;
    for (const chunk of this.tail) {
      if (seen + chunk.length > this.scanned) {
        const from = Math.max(0, this.scanned - seen);
        if (chunk.indexOf(LF, from) >= 0) {
          this.merge();
          return this.head.indexOf(LF, this.pos + this.scanned);
        }
      }
      seen += chunk.length;
    }
    this.scanned = seen;
    return -1;
  }

  /** Length of the current partial line (bytes known to have no LF). */
  get lineLength(): number {
    return this.scanned;
  }

  consume(n: number): void {
    this.pos += n;
    this.scanned = 0;
    if (this.pos >= this.head.length && this.tailBytes === 0) {
      this.head = EMPTY;
      this.headOwned = true;
      this.pos = 0;
    }
  }

  /** Copy the bytes still held that live in pushed chunks: their memory may be reused after this. */
  own(): void {
    if (!this.headOwned) {
      // `scanned` counts from `pos`, so it still holds for the copy.
      this.head = this.pos < this.head.length ? Buffer.from(this.head.subarray(this.pos)) : EMPTY;
      this.pos = 0;
      this.headOwned = true;
    }
    for (let i = this.ownedTail; i < this.tail.length; i++) this.tail[i] = Buffer.from(this.tail[i]!);
    this.ownedTail = this.tail.length;
  }

  /** Drop everything buffered (used when discarding an over-long line). */
  clear(): void {
    this.head = EMPTY;
    this.headOwned = true;
    this.ownedTail = 0;
    this.pos = 0;
    this.tail = [];
    this.tailBytes = 0;
    this.scanned = 0;
  }

  private merge(): void {
    const parts = [this.head.subarray(this.pos), ...this.tail];
    const merged = Buffer.concat(parts, this.head.length - this.pos + this.tailBytes);
    // Keep the scanned count relative to pos: it is unchanged by a merge.
    this.head = merged;
    this.headOwned = true;
    this.pos = 0;
    this.tail = [];
    this.ownedTail = 0;
    this.tailBytes = 0;
  }
}

/** Parse a decimal integer from bytes [from, to). Returns NaN for anything but an optional '-' and digits. */
export function parseIntBytes(buf: Buffer, from: number, to: number): number {
  if (from >= to || to - from > 18) return Number.NaN;
  let i = from;
  let negative = false;
  if (buf[i] === 0x2d) {
    negative = true;
    i++;
    if (i === to) return Number.NaN;
  }
  let n = 0;
  for (; i < to; i++) {
    const c = buf[i]! - 0x30;
    if (c < 0 || c > 9) return Number.NaN;
    n = n * 10 + c;
  }
  return negative ? -n : n;
}
