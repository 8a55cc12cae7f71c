// Server side of migration streaming: RANGEDUMP walks the store once, returning batches of
// the keys whose ring hash falls in the ranges being moved.
//
// A dump is a resumable cursor held under a token chosen by the proxy. It walks live Map
// iterators, shard by shard, scanning a bounded number of keys per call so that one call never
// stalls the event loop for long. Map iterators stay valid while entries are deleted, so the
// proxy can delete each batch (after the target has it durably) while the dump goes on. No new
// keys appear in a moving range on its source: the proxy routes those writes to the target.
import { hashLatin1 } from '../common/hash.js';
import type { HashRange } from '../common/ring.js';
import type { ShardedStore } from './store.js';

/** Keys examined per call at most: bounds the time one call holds the event loop (~10 ms). */
const SCAN_BUDGET = 50_000;
const IDLE_EXPIRY_MS = 5 * 60_000;

/** Sorted, non-overlapping closed intervals [lo, hi] of hash values. */
export class HashIntervals {
  private readonly lo: number[] = [];
  private readonly hi: number[] = [];

  constructor(ranges: readonly HashRange[]) {
    const parts: [number, number][] = [];
    for (const { start, end } of ranges) {
      if (start === end) parts.push([0, 0xffffffff]);
      else if (start < end) parts.push([start + 1, end]);
      else {
        if (start < 0xffffffff) parts.push([start + 1, 0xffffffff]);
        parts.push([0, end]);
      }
    }
    parts.sort((a, b) => a[0] - b[0]);
    for (const [lo, hi] of parts) {
      const last = this.hi.length - 1;
      if (last >= 0 && lo <= this.hi[last]! + 1) this.hi[last] = Math.max(this.hi[last]!, hi);
      else {
        this.lo.push(lo);
        this.hi.push(hi);
      }
    }
  }

  has(hash: number): boolean {
    let lo = 0;
    let hi = this.lo.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (hash < this.lo[mid]!) hi = mid - 1;
      else if (hash > this.hi[mid]!) lo = mid + 1;
      else return true;
    }
    return false;
  }
}

interface Dump {
  intervals: HashIntervals;
  shard: number;
  iterator: IterableIterator<[string, string]> | undefined;
  lastUsed: number;
}

export interface DumpBatch {
  done: boolean;
  scanned: number;
  keys: string[];
  values: string[];
}

export class RangeDumps {
  private readonly dumps = new Map<string, Dump>();

  constructor(private readonly store: ShardedStore) {}

  get active(): number {
    return this.dumps.size;
  }

  /** Next batch of up to `count` pairs. `ranges` starts a new dump under `token`. */
  next(token: string, count: number, ranges: readonly HashRange[] | undefined, now = Date.now()): DumpBatch | undefined {
    this.expire(now);
    let dump = this.dumps.get(token);
    if (ranges !== undefined && ranges.length > 0) {
      dump = { intervals: new HashIntervals(ranges), shard: 0, iterator: undefined, lastUsed: now };
      this.dumps.set(token, dump);
    }
    if (dump === undefined) return undefined;
    dump.lastUsed = now;
    const out: DumpBatch = { done: false, scanned: 0, keys: [], values: [] };
    while (out.keys.length < count && out.scanned < SCAN_BUDGET) {
      if (dump.iterator === undefined) {
        if (dump.shard >= this.store.shardCount) {
          out.done = true;
          this.dumps.delete(token);
          break;
        }
        dump.iterator = this.store.shardEntries(dump.shard);
      }
      const step = dump.iterator.next();
      if (step.done) {
        dump.iterator = undefined;
        dump.shard++;
        continue;
      }
      out.scanned++;
      const [key, value] = step.value;
      if (dump.intervals.has(hashLatin1(key))) {
        out.keys.push(key);
        out.values.push(value);
      }
    }
    return out;
  }

  end(token: string): void {
    this.dumps.delete(token);
  }

  clear(): void {
    this.dumps.clear();
  }

  private expire(now: number): void {
    for (const [token, dump] of this.dumps) if (now - dump.lastUsed > IDLE_EXPIRY_MS) this.dumps.delete(token);
  }
}
