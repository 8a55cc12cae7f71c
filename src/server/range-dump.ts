// The walk behind a source's push (range-push.ts): batches of the keys whose ring hash falls in
// the ranges being moved, one pass over the store.
//
// Each range is labelled with the index of the node it moves to, and each batch is encoded as
// ready-to-send requests (encodeDumpFrames): one `IMPORT k v ...` per target.
//
// A dump is a resumable cursor over the store's arenas, held under a token chosen by the proxy.
// Each call examines a bounded number of entries, so one call never stalls the event loop for
// long. The ring hash of every key is kept in the store, so a dump never rehashes. Entries
// written while the dump runs are not in a moving range (the proxy routes those writes to the
// target), and the source drops the moved ranges (DROPRANGE) only after every target has all
// of them durably; an entry seen twice (the walk restarts a shard that was compacted) is
// harmless, since IMPORT never overwrites.
import { ByteSink } from '../common/protocol/byte-sink.js';
import type { ShardedStore, StoreCursor } from './store.js';
import { HashIntervals, type LabelledRange } from './hash-intervals.js';

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

/**
 * Encode a batch as one RESP `IMPORT k v ...` request per target (a target with no keys in
 * this batch gets an empty buffer).
 */
export function encodeDumpFrames(batch: Pick<DumpBatch, 'keys' | 'values' | 'labels' | 'targets'>): Buffer[] {
  const { keys, values, labels, targets } = batch;
  const counts = new Array<number>(targets).fill(0);
  for (const l of labels) counts[l]!++;
  const sinks = counts.map((n) => {
    if (n === 0) return undefined;
    const sink = new ByteSink(64 * 1024);
    sink.latin1(`*${1 + 2 * n}\r\n$6\r\nIMPORT\r\n`);
    return sink;
  });
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i]!;
    const value = values[i]!;
    sinks[labels[i]!]!.latin1(`$${key.length}\r\n`).bytes(key).latin1(`\r\n$${value.length}\r\n`).bytes(value).latin1('\r\n');
  }
  return sinks.map((s) => (s === undefined ? Buffer.alloc(0) : s.take()));
}
