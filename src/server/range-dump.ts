// Server side of migration streaming: RANGEDUMP walks the store once, returning batches of
// the keys whose ring hash falls in the ranges being moved.
//
// A dump is a resumable cursor over the store's arenas, held under a token chosen by the proxy.
// Each call examines a bounded number of entries, so one call never stalls the event loop for
// long. The ring hash of every key is kept in the store, so a dump never rehashes. Entries
// written while the dump runs are not in a moving range (the proxy routes those writes to the
// target), and the proxy deletes each batch only after the target has it durably; an entry
// seen twice (the walk restarts a shard that was compacted) is harmless, since IMPORT never
// overwrites and DEL is idempotent.
import type { HashRange } from '../common/ring.js';
import type { ShardedStore, StoreCursor } from './store.js';

/** Entries examined per call at most: bounds the time one call holds the event loop. */
const SCAN_BUDGET = 100_000;
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
  cursor: StoreCursor;
  lastUsed: number;
}

export interface DumpBatch {
  done: boolean;
  scanned: number;
  /** Views into the store: encode them before the next write. */
  keys: Buffer[];
  values: Buffer[];
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
      dump = { intervals: new HashIntervals(ranges), cursor: this.store.newCursor(), lastUsed: now };
      this.dumps.set(token, dump);
    }
    if (dump === undefined) return undefined;
    dump.lastUsed = now;
    const out: DumpBatch = { done: false, scanned: 0, keys: [], values: [] };
    const intervals = dump.intervals;
    // Scan in steps so that a batch stops soon after it is full.
    const step = Math.max(1000, Math.min(SCAN_BUDGET, count * 4));
    while (out.keys.length < count && out.scanned < SCAN_BUDGET) {
      const before = out.scanned;
      const done = this.store.scan(dump.cursor, step, (hash, key, value) => {
        out.scanned++;
        if (!intervals.has(hash)) return true;
        out.keys.push(key);
        out.values.push(value!);
        return out.keys.length < count;
      });
      if (done) {
        out.done = true;
        this.dumps.delete(token);
        break;
      }
      if (out.scanned === before) break;
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
