// Moving data for a membership change: stream every key whose owner changes from its old
// owner (source) to its new owner (target), in batches.
//
// The sources push, server to server (RANGEPUSH, server/range-push.ts): each source walks the
// ranges it loses, each range labelled with its target, and sends every batch to the targets
// as one IMPORT each (insert-if-absent, one fsync per batch on the target). The proxy starts
// the pushes and follows their progress (RANGEPUSH WAIT, a few times a second); no key passes
// through it, so a move takes nothing from the proxy's client traffic. Only after every
// target acknowledged every IMPORT of a source durably does that source drop the ranges it
// lost (DROPRANGE: one WAL record per few shards, instead of a DEL of every key). A source
// that leaves the ring (REMOVE) drops nothing: it is RESET once the move is committed.
// Sources run concurrently.
//
// Correctness does not depend on this code's timing: the Router already sends every write for
// a moving key to its target, and IMPORT never overwrites, so a batch can be repeated (after a
// crash) or race with client traffic without losing or reviving anything. A source's copies of
// moving keys are frozen (nothing but the migration touches them), so dropping them whole once
// the targets hold them all deletes nothing that is not durable elsewhere. A failed move is
// reported only once no batch of it is in flight (RANGEPUSH STOP waits for that), and a new
// push on a source first stops the one before it, so a retry never races an earlier attempt.
import { randomBytes } from 'node:crypto';
import type { HashRing, MovedRange } from '../common/ring.js';
import type { Reply } from '../common/protocol/reply.js';
import { MAX_DUMP_KEYS } from '../common/limits.js';
import type { Backend, BackendPool } from '../common/net/backend.js';

/**
 * Keys per IMPORT. 400 against 250 in three rounds of `npm run bench:rebalance` (15 alternating
 * pairs): an ADD at 94-125k keys/s instead of 78-100k for the same share of the load
 * (docs/rebalancing.md).
 */
export const DEFAULT_BATCH_KEYS = 400;

/**
 * Most keys a move copies per second unless told otherwise (kv-proxy --migrate-rate; 0: no
 * limit). Unthrottled, a move takes as much of the machine as it can get: on the 2-core
 * reference machine an ADD under 50 clients then kept 46-54% of their throughput. A move runs
 * a little below its limit (starting, the last batches, DROPRANGE, the commit), and under load
 * the client traffic kept more margin than the speed did: with a limit of 112k, 4 of 24 ADDs ran
 * at 94.9-99.3k keys/s while keeping 57-68% of the load. At 118k, 12 ADDs ran at 100-110k keys/s
 * keeping 40-65% (median 62%, against 63% at 112k in the same minutes); REMOVEs at 113-116k
 * keeping 61-87% (docs/rebalancing.md).
 */
export const DEFAULT_MIGRATE_RATE = 118_000;

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

/**
 * Move every key whose owner differs between `from` and `to`. Updates `progress` as it goes.
 * `batchKeys` and `maxKeysPerSec` are the proxy's settings (Membership holds their defaults).
 */
export async function migrate(pool: BackendPool, from: HashRing, to: HashRing, progress: MigrationProgress, batchKeys: number, maxKeysPerSec: number): Promise<void> {
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
  // If one source fails, the others' pushes are stopped too (at their next WAIT), and the error
  // is reported only once nothing is copying any more: a retry must never race a batch of this
  // attempt.
  const stop: { reason: unknown } = { reason: undefined };
  const bulkPool = pool.fork();
  // --migrate-rate is for the whole move: each source gets the share of it that its part of
  // the ring is of the moving part, so that they all finish together.
  const width = (ranges: MovedRange[]): number => ranges.reduce((sum, r) => sum + (r.start === r.end ? 2 ** 32 : (r.end - r.start + 2 ** 32) % 2 ** 32), 0);
  const total = moved.length > 0 ? width(moved) : 1;
  const rate = (ranges: MovedRange[]): number => (maxKeysPerSec > 0 ? Math.max(1, Math.round((maxKeysPerSec * width(ranges)) / total)) : 0);
  try {
    const results = await Promise.allSettled(
      [...bySource].map(([source, ranges]) =>
        drainSource({ pool: bulkPool, progress, stop }, source, ranges, batchKeys, rate(ranges), to.members.includes(source)).catch((err: unknown) => {
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

interface MoveContext {
  pool: BackendPool;
  progress: MigrationProgress;
  stop: { reason: unknown };
}

/**
 * Have one source push its moving keys to their targets, and follow it. `rate`: this source's
 * share of --migrate-rate (0: no limit). `dropMoved`: then delete them from the source; false
 * for a source leaving the ring, whose data is dropped whole (RESET) once the move is committed.
 */
async function drainSource(ctx: MoveContext, sourceAddress: string, ranges: MovedRange[], batchKeys: number, rate: number, dropMoved: boolean): Promise<void> {
  const { pool, progress, stop } = ctx;
  const source = pool.get(sourceAddress);
  const targets = [...new Set(ranges.map((r) => r.to))];
  const rangeArgs = ranges.flatMap((r) => [String(r.start), String(r.end), String(targets.indexOf(r.to))]);
  const token = `mig-${randomBytes(6).toString('hex')}`;
  // A batch is split between the targets: size it so that each IMPORT is about batchKeys.
  const count = String(Math.min(batchKeys * targets.length, MAX_DUMP_KEYS));
  expectOk(await source.call(['RANGEPUSH', 'START', token, count, String(rate), String(targets.length), ...targets, ...rangeArgs]), `RANGEPUSH START on ${sourceAddress}`);
  let scanned = 0;
  let moved = 0;
  try {
    for (;;) {
      if (stop.reason !== undefined) throw new MigrationError('stopped: another source failed');
      const reply = expectOk(await source.call(['RANGEPUSH', 'WAIT', token]), `push from ${sourceAddress}`);
      const [done, nowScanned, nowMoved] = reply.type === 'array' && reply.items !== null ? reply.items : [];
      if (done?.type !== 'int' || nowScanned?.type !== 'int' || nowMoved?.type !== 'int') throw new MigrationError(`RANGEPUSH WAIT on ${sourceAddress}: malformed reply`);
      progress.keysScanned += nowScanned.value - scanned;
      progress.keysMoved += nowMoved.value - moved;
      scanned = nowScanned.value;
      moved = nowMoved.value;
      if (done.value === 1) break;
    }
  } catch (err) {
    // Report only once nothing of this push is in flight (a retry must never race a batch of
    // this attempt). If the source cannot be reached now, the retry's START stops it first.
    await source.call(['RANGEPUSH', 'STOP', token]);
    throw err;
  }
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
