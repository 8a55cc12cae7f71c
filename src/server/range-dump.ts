// Server side of migration streaming: RANGEDUMP walks the store once, returning batches of
// the keys whose ring hash falls in the ranges being moved.
//
// Each range is labelled with the index of the node it moves to, and each batch comes back as
// ready-to-send requests (encodeDumpFrames): one `IMPORT k v ...` per target and one `DEL k ...`
// for the source. The proxy forwards those bytes as they are, so a key costs it nothing.
//
// A dump is a resumable cursor over the store's arenas, held under a token chosen by the proxy.
// Each call examines a bounded number of entries, so one call never stalls the event loop for
// long. The ring hash of every key is kept in the store, so a dump never rehashes. Entries
// written while the dump runs are not in a moving range (the proxy routes those writes to the
// target), and the proxy deletes each batch only after the target has it durably; an entry
// seen twice (the walk restarts a shard that was compacted) is harmless, since IMPORT never
// overwrites and DEL is idempotent.
import type { HashRange } from '../common/ring.js';
import { ByteSink } from '../common/protocol/byte-sink.js';
import type { ShardedStore, StoreCursor } from './store.js';

/**
 * Bytes of keys and values in one batch at most (one entry more if that entry alone is bigger):
 * with 16 MiB values, a batch of `count` keys would otherwise be gigabytes.
 */
export const MAX_BATCH_BYTES = 4 * 1024 * 1024;
/** Most targets one dump splits its keys between. */
export const MAX_DUMP_TARGETS = 1024;
/** Entries examined per call at most: bounds the time one call holds the event loop. */
const SCAN_BUDGET = 100_000;
const IDLE_EXPIRY_MS = 5 * 60_000;

/** A ring range, and the index of the node it moves to (0 when there is one target). */
export interface LabelledRange extends HashRange {
  target?: number;
}

/** Sorted, non-overlapping closed intervals [lo, hi] of hash values, each with a label. */
export class HashIntervals {
  private readonly lo: number[] = [];
  private readonly hi: number[] = [];
  private readonly label: number[] = [];
  /** One more than the largest label: how many targets the ranges go to. */
  readonly labels: number;

  constructor(ranges: readonly LabelledRange[]) {
    const parts: [number, number, number][] = [];
    let labels = 0;
    for (const { start, end, target = 0 } of ranges) {
      labels = Math.max(labels, target + 1);
      if (start === end) parts.push([0, 0xffffffff, target]);
      else if (start < end) parts.push([start + 1, end, target]);
      else {
        if (start < 0xffffffff) parts.push([start + 1, 0xffffffff, target]);
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
}

interface Dump {
  intervals: HashIntervals;
  cursor: StoreCursor;
  lastUsed: number;
}

export interface DumpBatch {
  done: boolean;
  scanned: number;
  /** How many targets the dump's ranges go to (labels 0 .. targets-1). */
  targets: number;
  /** Views into the store: encode them before the next write. */
  keys: Buffer[];
  values: Buffer[];
  /** The target label of each key. */
  labels: number[];
  /** The newest not-yet-durable WAL group that wrote one of these entries (0: none). */
  dependency: number;
}

export class RangeDumps {
  private readonly dumps = new Map<string, Dump>();

  constructor(private readonly store: ShardedStore) {}

  get active(): number {
    return this.dumps.size;
  }

  /** Next batch of up to `count` pairs and about `maxBytes`. `ranges` starts a new dump under `token`. */
  next(token: string, count: number, ranges: readonly LabelledRange[] | undefined, now = Date.now(), maxBytes = MAX_BATCH_BYTES): DumpBatch | undefined {
    this.expire(now);
    let dump = this.dumps.get(token);
    if (ranges !== undefined && ranges.length > 0) {
      dump = { intervals: new HashIntervals(ranges), cursor: this.store.newCursor(), lastUsed: now };
      this.dumps.set(token, dump);
    }
    if (dump === undefined) return undefined;
    dump.lastUsed = now;
    const intervals = dump.intervals;
    const out: DumpBatch = { done: false, scanned: 0, targets: intervals.labels, keys: [], values: [], labels: [], dependency: 0 };
    // Scan in steps so that a batch stops soon after it is full.
    const step = Math.max(1000, Math.min(SCAN_BUDGET, count * 4));
    let bytes = 0;
    const full = (): boolean => out.keys.length >= count || bytes >= maxBytes;
    // `want` sees every entry (and counts it); `visit` only those in a moving range.
    let label = -1;
    const want = (hash: number): boolean => {
      out.scanned++;
      label = intervals.find(hash);
      return label >= 0;
    };
    while (!full() && out.scanned < SCAN_BUDGET) {
      const before = out.scanned;
      const done = this.store.scan(
        dump.cursor,
        step,
        (_hash, key, value) => {
          out.keys.push(key);
          out.values.push(value!);
          out.labels.push(label);
          bytes += key.length + value!.length;
          return !full();
        },
        false,
        want,
      );
      out.dependency = Math.max(out.dependency, this.store.readDependency);
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

/** A dumped batch as requests: `DEL` of every key (for the source), `IMPORT` per target. */
export interface DumpFrames {
  del: Buffer;
  imports: Buffer[];
}

/** Encode a batch as RESP requests (a target with no keys gets an empty buffer). */
export function encodeDumpFrames(batch: Pick<DumpBatch, 'keys' | 'values' | 'labels' | 'targets'>): DumpFrames {
  const { keys, values, labels, targets } = batch;
  const counts = new Array<number>(targets).fill(0);
  for (const l of labels) counts[l]!++;
  const sinks = counts.map((n) => {
    if (n === 0) return undefined;
    const sink = new ByteSink(64 * 1024);
    sink.latin1(`*${1 + 2 * n}\r\n$6\r\nIMPORT\r\n`);
    return sink;
  });
  const del = new ByteSink(16 * 1024).latin1(`*${1 + keys.length}\r\n$3\r\nDEL\r\n`);
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i]!;
    const value = values[i]!;
    sinks[labels[i]!]!.latin1(`$${key.length}\r\n`).bytes(key).latin1(`\r\n$${value.length}\r\n`).bytes(value).latin1('\r\n');
    del.latin1(`$${key.length}\r\n`).bytes(key).latin1('\r\n');
  }
  return { del: keys.length === 0 ? Buffer.alloc(0) : del.take(), imports: sinks.map((s) => (s === undefined ? Buffer.alloc(0) : s.take())) };
}
