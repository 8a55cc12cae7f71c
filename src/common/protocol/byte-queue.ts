// A queue of received bytes for the push-style decoders. Chunks are only merged when a frame
// element is known to be complete, and then only the bytes of that element are copied (the
// rest of the chunk it ends in stays where it is); a line is scanned for its newline once per
// byte. So a peer that dribbles bytes one at a time costs linear work, not quadratic, and a
// stream of requests cut at arbitrary read boundaries copies only the requests that straddle
// one.
//
// A pushed chunk may be borrowed: a view into memory its owner reuses (the listener's shared
// read buffer). own() copies what is still held of borrowed chunks, so the caller can return
// the memory; each byte is copied at most once, however many reads a large frame spans.

const EMPTY = Buffer.alloc(0);
const LF = 0x0a;

export class ByteQueue {
  /** Working buffer (a pushed chunk, or a merge); bytes before `pos` are consumed. */
  head: Buffer = EMPTY;
  pos = 0;
  private tail: Buffer[] = [];
  private tailBytes = 0;
  /** Bytes after `pos` already known to contain no LF. */
  private scanned = 0;
  /** When `scanned` reaches past the head: tail[0 .. scannedChunks) are the chunks it covers. */
  private scannedChunks = 0;
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
      this.scannedChunks = 0;
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
    this.mergeFirst(n);
    return true;
  }

  /**
   * Index in `head` of the next LF at or after `pos`, or -1. Bytes already scanned are not
   * scanned again; `lineLength` reports how long the line is so far, for bounds checks.
   */
  indexOfLF(): number {
    const inHead = this.head.length - this.pos;
    if (this.scanned < inHead) {
      const i = this.head.indexOf(LF, this.pos + this.scanned);
      if (i >= 0) return i;
      this.scanned = inHead;
      this.scannedChunks = 0;
    }
    // Look through the tail chunks not scanned yet (each is scanned once, however many calls a
    // line takes to arrive); merge only once a newline is there.
    let seen = this.scanned;
    for (let k = this.scannedChunks; k < this.tail.length; k++) {
      const chunk = this.tail[k]!;
      const lf = chunk.indexOf(LF);
      if (lf >= 0) {
        // Make the line contiguous, up to and including its LF (head[0 .. seen + lf]).
        this.mergeFirst(seen + lf + 1);
        return seen + lf;
      }
      seen += chunk.length;
      this.scannedChunks = k + 1;
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
    this.scannedChunks = 0;
    if (this.pos < this.head.length) return;
    if (this.tailBytes === 0) {
      this.head = EMPTY;
      this.headOwned = true;
      this.pos = 0;
      return;
    }
    // The head is used up: the next chunk becomes the head, as it is.
    const next = this.tail.shift()!;
    this.tailBytes -= next.length;
    this.head = next;
    this.headOwned = this.ownedTail > 0;
    if (this.ownedTail > 0) this.ownedTail--;
    this.pos = 0;
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
    this.scannedChunks = 0;
  }

  /**
   * Make head[pos..] hold at least `n` bytes (n <= available): copy the rest of the head and the
   * first bytes of the tail into a new head, taking from the tail only what `n` needs. What is
   * left of a chunk stays a view of it.
   */
  private mergeFirst(n: number): void {
    const rest = this.head.length - this.pos;
    const merged = Buffer.allocUnsafe(n);
    this.head.copy(merged, 0, this.pos);
    let filled = rest;
    let used = 0; // tail chunks taken whole
    while (filled < n) {
      const chunk = this.tail[used]!;
      const take = Math.min(chunk.length, n - filled);
      chunk.copy(merged, filled, 0, take);
      filled += take;
      this.tailBytes -= take;
      if (take === chunk.length) used++;
      else this.tail[used] = chunk.subarray(take);
    }
    if (used > 0) {
      this.tail.splice(0, used);
      this.ownedTail = Math.max(0, this.ownedTail - used);
    }
    this.head = merged;
    this.headOwned = true;
    this.pos = 0;
    // What was scanned of the merged bytes still holds; the tail is rescanned from its start.
    this.scanned = Math.min(this.scanned, n);
    this.scannedChunks = 0;
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
