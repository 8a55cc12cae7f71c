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
import { bulkLength, writeBulk } from '../common/protocol/resp.js';
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
 * this batch gets an empty buffer). Each request is sized first and written in place: this
 * runs once per batch of a move, in a process that has rarely run it before, so it is kept
 * small enough for V8 to optimize quickly (no strings built per key).
 */
export function encodeDumpFrames(batch: Pick<DumpBatch, 'keys' | 'values' | 'labels' | 'targets'>): Buffer[] {
  const { keys, values, labels, targets } = batch;
  const counts = new Int32Array(targets);
  // Bytes each target's IMPORT needs; then, while writing, where its next key goes.
  const at = new Float64Array(targets);
  for (let i = 0; i < keys.length; i++) {
    const l = labels[i]!;
    counts[l]!++;
    at[l]! += bulkLength(keys[i]!.length) + bulkLength(values[i]!.length);
  }
  const frames: Buffer[] = [];
  for (let l = 0; l < targets; l++) {
    if (counts[l] === 0) {
      frames.push(Buffer.alloc(0));
      continue;
    }
    const header = `*${1 + 2 * counts[l]!}\r\n$6\r\nIMPORT\r\n`;
    const frame = Buffer.allocUnsafe(header.length + at[l]!);
    frame.write(header, 0, 'latin1');
    at[l] = header.length;
    frames.push(frame);
  }
  for (let i = 0; i < keys.length; i++) {
    const l = labels[i]!;
    const frame = frames[l]!;
    at[l] = writeBulk(frame, writeBulk(frame, at[l]!, keys[i]!), values[i]!);
  }
  return frames;
}
