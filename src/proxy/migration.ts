// Moving data for a membership change: stream every key whose owner changes from its old
// owner (source) to its new owner (target), in batches.
//
// Per source, one RANGEDUMP cursor walks the ranges that source loses, each range labelled
// with its target. The source returns every batch as ready-to-send requests: an IMPORT per
// target (insert-if-absent, one fsync per batch on the target). The proxy forwards those bytes
// untouched, so moving a key costs the proxy no per-key work. Only after every target
// acknowledged every IMPORT of a source durably does that source drop the ranges it lost
// (DROPRANGE: one WAL record per few shards, instead of a DEL of every key). A source that
// leaves the ring (REMOVE) drops nothing: it is RESET once the move is committed.
// The next batch's RANGEDUMP is requested while the current one is being imported, so the
// source, the targets and the proxy work in parallel. Sources run concurrently.
//
// Migration traffic uses its own connections (BackendPool.fork), so a client's GET is never
// queued behind a batch on the wire or in a node's reply order.
//
// Correctness does not depend on this code's timing: the Router already sends every write for
// a moving key to its target, and IMPORT never overwrites, so a batch can be repeated (after a
// crash) or race with client traffic without losing or reviving anything. A source's copies of
// moving keys are frozen (nothing but the migration touches them), so dropping them whole once
// the targets hold them all deletes nothing that is not durable elsewhere.
import { randomBytes } from 'node:crypto';
import type { HashRing, MovedRange } from '../common/ring.js';
import type { Reply } from '../common/protocol/reply.js';
import { MAX_DUMP_KEYS } from '../common/limits.js';
import type { Backend, BackendPool } from './backend.js';

export const DEFAULT_BATCH_KEYS = 250;

export interface MigrationProgress {
  state: 'idle' | 'running' | 'failed' | 'done';
  kind: 'add' | 'remove' | '';
  node: string;
  sources: string[];
  targets: string[];
  keysMoved: number;
  keysScanned: number;
  /** Keys held by the sources when the move started: the most that may need scanning. */
  keysToScan: number;
  startedAt: number;
  finishedAt: number;
  error: string;
}

export function idleProgress(): MigrationProgress {
  return { state: 'idle', kind: '', node: '', sources: [], targets: [], keysMoved: 0, keysScanned: 0, keysToScan: 0, startedAt: 0, finishedAt: 0, error: '' };
}

export class MigrationError extends Error {
  override readonly name = 'MigrationError';
}

function expectOk(reply: Reply, what: string): Reply {
  if (reply.type === 'error') throw new MigrationError(`${what}: ${reply.message}`);
  return reply;
}

/** Move every key whose owner differs between `from` and `to`. Updates `progress` as it goes. */
export async function migrate(pool: BackendPool, from: HashRing, to: HashRing, progress: MigrationProgress, batchKeys = DEFAULT_BATCH_KEYS, maxKeysPerSec = 0): Promise<void> {
  const moved = from.movedTo(to).filter((r) => r.from !== '');
  const bySource = new Map<string, MovedRange[]>();
  for (const r of moved) {
    const list = bySource.get(r.from);
    if (list === undefined) bySource.set(r.from, [r]);
    else list.push(r);
  }
  progress.sources = [...bySource.keys()];
  progress.targets = [...new Set(moved.map((r) => r.to))];
  // Drain barrier: the Router already sends moving keys' writes to the targets, but writes sent
  // to a source just before that switch may still be in flight on its client connection. A PING
  // on that same FIFO connection is answered only after they were applied, so the dump (on
  // another connection) starts after them and copies them.
  const pongs = await Promise.all(progress.sources.map((s) => pool.get(s).call(['PING'])));
  pongs.forEach((r, i) => expectOk(r, `PING on ${progress.sources[i]}`));
  // Size the work: how many keys the sources hold (the dump scans each of them once).
  const sizes = await Promise.all(progress.sources.map((s) => pool.get(s).call(['DBSIZE'])));
  progress.keysToScan = sizes.reduce((sum, r, i) => sum + (expectOk(r, `DBSIZE on ${progress.sources[i]}`).type === 'int' ? (r as { value: number }).value : 0), 0);
  // If one source fails, the others stop too (at their next batch), and the error is reported
  // only once nothing is copying any more: a retry must never race a batch of this attempt.
  const stop: { reason: unknown } = { reason: undefined };
  const bulkPool = pool.fork();
  const lanes = new Map(progress.targets.map((t) => [t, new Lane(TARGET_WINDOW)]));
  const pacer = new Pacer(maxKeysPerSec);
  try {
    const results = await Promise.allSettled(
      [...bySource].map(([source, ranges]) =>
        drainSource({ pool: bulkPool, lanes, pacer, progress, stop }, source, ranges, batchKeys, to.members.includes(source)).catch((err: unknown) => {
          stop.reason ??= err;
          throw err;
        }),
      ),
    );
    const failed = results.find((r) => r.status === 'rejected');
    if (failed !== undefined) throw stop.reason ?? (failed as PromiseRejectedResult).reason;
  } finally {
    bulkPool.close();
  }
}

/** Batches of one source being imported at once; the dump itself is sequential. */
const WINDOW = 2;
/**
 * IMPORTs in flight to one target, whichever source they come from. A node serves a batch in
 * one go, so every batch queued ahead of a client's request delays it: two at a time bound that
 * delay to about two batches (~500 keys at the default size) while keeping the target busy.
 */
const TARGET_WINDOW = 2;

/** A counting semaphore: at most `free` (as constructed) holders at once; the rest wait in order. */
class Lane {
  private waiting: (() => void)[] = [];
  constructor(private free: number) {}
  async acquire(): Promise<void> {
    if (this.free > 0) {
      this.free--;
      return;
    }
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }
  release(): void {
    const next = this.waiting.shift();
    if (next !== undefined) next();
    else this.free++;
  }
}

/**
 * Holds a move to `rate` keys per second on average, all sources together (kv-proxy
 * --migrate-rate): a move then takes no more of the machine than that, and client traffic keeps
 * the rest. 0: as fast as the pipeline goes.
 */
class Pacer {
  private readonly start = performance.now();
  private granted = 0;

  constructor(private readonly rate: number) {}

  /** Resolves when `keys` more may be sent: once the keys granted so far are due at `rate`. */
  async take(keys: number): Promise<void> {
    if (this.rate <= 0) return;
    const due = this.start + (this.granted / this.rate) * 1000;
    this.granted += keys;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  }
}

interface MoveContext {
  pool: BackendPool;
  lanes: Map<string, Lane>;
  pacer: Pacer;
  progress: MigrationProgress;
  stop: { reason: unknown };
}

/**
 * Stream one source's moving keys to their targets. `dropMoved`: then delete them from the
 * source; false for a source leaving the ring, whose data is dropped whole (RESET) once the
 * move is committed.
 */
async function drainSource(ctx: MoveContext, sourceAddress: string, ranges: MovedRange[], batchKeys: number, dropMoved: boolean): Promise<void> {
  const { pool, progress, stop } = ctx;
  const source = pool.get(sourceAddress);
  const targets = [...new Set(ranges.map((r) => r.to))];
  const rangeArgs = ranges.flatMap((r) => [String(r.start), String(r.end), String(targets.indexOf(r.to))]);
  const token = `mig-${randomBytes(6).toString('hex')}`;
  // A batch is split between the targets: size it so that each IMPORT is about batchKeys.
  const count = String(Math.min(batchKeys * targets.length, MAX_DUMP_KEYS));
  let request: Promise<Reply> = source.call(['RANGEDUMP', token, count, ...rangeArgs]);
  const inFlight = new Set<Promise<void>>();
  let failure: unknown;
  const track = (batch: Promise<void>): void => {
    const p = batch.catch((err: unknown) => {
      failure ??= err;
    });
    inFlight.add(p);
    void p.finally(() => inFlight.delete(p));
  };
  try {
    for (;;) {
      const reply = expectOk(await request, `RANGEDUMP on ${sourceAddress}`);
      const batch = parseDump(reply, targets.length, sourceAddress);
      progress.keysScanned += batch.scanned;
      // Ask for the next batch at once: it is scanned while this one is imported.
      if (!batch.done) request = source.call(['RANGEDUMP', token, count]);
      if (batch.keys > 0) {
        await ctx.pacer.take(batch.keys);
        track(moveBatch(ctx, targets, batch));
      }
      while (inFlight.size >= WINDOW && failure === undefined) await Promise.race(inFlight);
      if (failure !== undefined) throw failure;
      if (stop.reason !== undefined) throw new MigrationError(`stopped: another source failed`);
      if (batch.done) break;
    }
  } catch (err) {
    // Nothing of this attempt may still be in flight once the move is reported as failed.
    await Promise.all(inFlight);
    throw err;
  }
  await Promise.all(inFlight);
  if (failure !== undefined) throw failure;
  // Every target holds every key of these ranges durably: the source's copies can go.
  if (dropMoved) await dropRanges(source, ranges);
}

/** DROPRANGE the source's lost ranges, call after call (a few shards each), until it is done. */
async function dropRanges(source: Backend, ranges: MovedRange[]): Promise<void> {
  const pairs = ranges.flatMap((r) => [String(r.start), String(r.end)]);
  for (let from = 0; ; ) {
    const reply = expectOk(await source.call(['DROPRANGE', String(from), ...pairs]), `DROPRANGE on ${source.address}`);
    const [done, next] = reply.type === 'array' && reply.items !== null ? reply.items : [];
    if (done?.type !== 'int' || next?.type !== 'int') throw new MigrationError(`DROPRANGE on ${source.address}: malformed reply`);
    if (done.value === 1) return;
    from = next.value;
  }
}

interface DumpedBatch {
  done: boolean;
  scanned: number;
  keys: number;
  /** `IMPORT k v ...` per target (empty: no key for that target), as RESP bytes. */
  imports: Buffer[];
}

/** RANGEDUMP's reply: [done, scanned, keys, IMPORT request per target]. */
function parseDump(reply: Reply, targets: number, source: string): DumpedBatch {
  const items = reply.type === 'array' ? reply.items : null;
  const [done, scanned, keys] = items ?? [];
  const frames = (items ?? []).slice(3).map((f) => (f.type === 'bulk' && f.value !== null ? f.value : undefined));
  if (items?.length !== 3 + targets || done?.type !== 'int' || scanned?.type !== 'int' || keys?.type !== 'int' || frames.includes(undefined)) {
    throw new MigrationError(`RANGEDUMP on ${source}: malformed reply`);
  }
  return { done: done.value === 1, scanned: scanned.value, keys: keys.value, imports: frames as Buffer[] };
}

/** IMPORT one dumped batch into its target(s); resolves once all of them hold it durably. */
async function moveBatch(ctx: MoveContext, targets: string[], batch: DumpedBatch): Promise<void> {
  // Wait for every reply before judging any: nothing of this batch may still be in flight
  // once the move is reported as failed.
  const used = targets.filter((_t, i) => batch.imports[i]!.length > 0);
  const replies = await Promise.all(
    used.map(async (t) => {
      const lane = ctx.lanes.get(t)!;
      await lane.acquire();
      try {
        return await ctx.pool.get(t).callEncoded(batch.imports[targets.indexOf(t)]!);
      } finally {
        lane.release();
      }
    }),
  );
  replies.forEach((r, i) => expectOk(r, `IMPORT on ${used[i]}`));
  ctx.progress.keysMoved += batch.keys;
}
