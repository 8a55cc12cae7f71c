// Moving data for a membership change: stream every key whose owner changes from its old
// owner (source) to its new owner (target), in batches.
//
// Per source, one RANGEDUMP cursor walks the ranges that source loses, each range labelled
// with its target. The source returns every batch as ready-to-send requests: an IMPORT per
// target (insert-if-absent, one fsync per batch on the target) and a DEL for itself. The proxy
// forwards those bytes untouched, so moving a key costs the proxy no per-key work. Only after
// every target acknowledged its IMPORT durably does the source get the batch's DEL; DELs go
// out in rounds of ~2,000 keys so that the source syncs many batches with one fsync. A source
// that leaves the ring (REMOVE) gets no DELs at all: it is RESET once the move is committed.
// The next batch's RANGEDUMP is requested while the current one is being imported, so the
// source, the targets and the proxy work in parallel. Sources run concurrently.
//
// Migration traffic uses its own connections (BackendPool.fork), so a client's GET is never
// queued behind a batch on the wire or in a node's reply order.
//
// Correctness does not depend on this code's timing: the Router already sends every write for
// a moving key to its target, and IMPORT never overwrites, so a batch can be repeated (after a
// crash) or race with client traffic without losing or reviving anything.
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

/**
 * Keys deleted from a source per DEL round. The DEL of each imported batch waits here until
 * this many keys are due, then they all leave together: the source reads them in one go and
 * syncs them with one fsync, instead of one fsync per batch.
 */
const DELETE_ROUND_KEYS = 2000;

/** The DELs a source owes for batches its targets hold durably, sent in rounds. */
class SourceDeletes {
  private frames: Buffer[] = [];
  private due = 0;
  private readonly sent: Promise<Reply>[] = [];

  constructor(private readonly source: Backend) {}

  add(frame: Buffer, keys: number): void {
    this.frames.push(frame);
    this.due += keys;
    if (this.due >= DELETE_ROUND_KEYS) this.flush();
  }

  private flush(): void {
    for (const frame of this.frames) this.sent.push(this.source.callEncoded(frame));
    this.frames = [];
    this.due = 0;
  }

  /** Send what is left and wait until the source has every delete on disk. */
  async finish(): Promise<void> {
    this.flush();
    for (const reply of await Promise.all(this.sent)) expectOk(reply, `DEL on ${this.source.address}`);
  }

  /** After a failure: wait for the DELs already sent (whatever their outcome); send no more. */
  async abandon(): Promise<void> {
    this.frames = [];
    await Promise.all(this.sent);
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
 * Stream one source's moving keys to their targets. `deleteMoved`: delete them from the source
 * as they land; false for a source leaving the ring, whose data is dropped whole (RESET) once
 * the move is committed, so per-key deletes would be wasted work.
 */
async function drainSource(ctx: MoveContext, sourceAddress: string, ranges: MovedRange[], batchKeys: number, deleteMoved: boolean): Promise<void> {
  const { pool, progress, stop } = ctx;
  const source = pool.get(sourceAddress);
  const deletes = deleteMoved ? new SourceDeletes(source) : undefined;
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
        track(moveBatch(ctx, targets, batch).then(() => deletes?.add(batch.del, batch.keys)));
      }
      while (inFlight.size >= WINDOW && failure === undefined) await Promise.race(inFlight);
      if (failure !== undefined) throw failure;
      if (stop.reason !== undefined) throw new MigrationError(`stopped: another source failed`);
      if (batch.done) break;
    }
  } catch (err) {
    // Nothing of this attempt may still be in flight once the move is reported as failed.
    await Promise.all(inFlight);
    await deletes?.abandon();
    throw err;
  }
  await Promise.all(inFlight);
  if (failure !== undefined) {
    await deletes?.abandon();
    throw failure;
  }
  await deletes?.finish();
}

interface DumpedBatch {
  done: boolean;
  scanned: number;
  keys: number;
  /** `DEL k ...` for the source, as RESP bytes. */
  del: Buffer;
  /** `IMPORT k v ...` per target (empty: no key for that target), as RESP bytes. */
  imports: Buffer[];
}

/** RANGEDUMP's reply: [done, scanned, keys, DEL request, IMPORT request per target]. */
function parseDump(reply: Reply, targets: number, source: string): DumpedBatch {
  const items = reply.type === 'array' ? reply.items : null;
  const [done, scanned, keys] = items ?? [];
  const frames = (items ?? []).slice(3).map((f) => (f.type === 'bulk' && f.value !== null ? f.value : undefined));
  if (items?.length !== 4 + targets || done?.type !== 'int' || scanned?.type !== 'int' || keys?.type !== 'int' || frames.includes(undefined)) {
    throw new MigrationError(`RANGEDUMP on ${source}: malformed reply`);
  }
  return { done: done.value === 1, scanned: scanned.value, keys: keys.value, del: frames[0]!, imports: frames.slice(1) as Buffer[] };
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
