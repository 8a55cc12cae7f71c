// Moving data for a membership change: stream every key whose owner changes from its old
// owner (source) to its new owner (target), in batches.
//
// Per source, one RANGEDUMP cursor walks the ranges that source loses. Each batch is
// IMPORTed into its target(s) (insert-if-absent, one fsync per batch on the target), and only
// after every target acknowledged it durably does the source DEL the batch (one fsync). The
// next batch's RANGEDUMP is requested while the current one is being imported, so the source,
// the targets and the proxy work in parallel. Sources run concurrently.
//
// Correctness does not depend on this code's timing: the Router already sends every write for
// a moving key to its target, and IMPORT never overwrites, so a batch can be repeated (after a
// crash) or race with client traffic without losing or reviving anything.
import { randomBytes } from 'node:crypto';
import { hashBytes } from '../common/hash.js';
import type { HashRing, MovedRange } from '../common/ring.js';
import type { Reply } from '../common/protocol/reply.js';
import type { Backend, BackendPool } from './backend.js';

export const DEFAULT_BATCH_KEYS = 2000;

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
export async function migrate(pool: BackendPool, from: HashRing, to: HashRing, progress: MigrationProgress, batchKeys = DEFAULT_BATCH_KEYS): Promise<void> {
  const moved = from.movedTo(to).filter((r) => r.from !== '');
  const bySource = new Map<string, MovedRange[]>();
  for (const r of moved) {
    const list = bySource.get(r.from);
    if (list === undefined) bySource.set(r.from, [r]);
    else list.push(r);
  }
  progress.sources = [...bySource.keys()];
  progress.targets = [...new Set(moved.map((r) => r.to))];
  // Size the work: how many keys the sources hold (the dump scans each of them once).
  const sizes = await Promise.all(progress.sources.map((s) => pool.get(s).call(['DBSIZE'])));
  progress.keysToScan = sizes.reduce((sum, r, i) => sum + (expectOk(r, `DBSIZE on ${progress.sources[i]}`).type === 'int' ? (r as { value: number }).value : 0), 0);
  // If one source fails, the others stop too (at their next batch), and the error is reported
  // only once nothing is copying any more: a retry must never race a batch of this attempt.
  const stop: { reason: unknown } = { reason: undefined };
  const results = await Promise.allSettled(
    [...bySource].map(([source, ranges]) =>
      drainSource(pool, pool.get(source), ranges, to, progress, batchKeys, stop).catch((err: unknown) => {
        stop.reason ??= err;
        throw err;
      }),
    ),
  );
  const failed = results.find((r) => r.status === 'rejected');
  if (failed !== undefined) throw stop.reason ?? (failed as PromiseRejectedResult).reason;
}

/** Batches of one source in flight at once (import + delete); the dump itself is sequential. */
const WINDOW = 4;

async function drainSource(pool: BackendPool, source: Backend, ranges: MovedRange[], to: HashRing, progress: MigrationProgress, batchKeys: number, stop: { reason: unknown }): Promise<void> {
  const token = `mig-${randomBytes(6).toString('hex')}`;
  const rangeArgs = ranges.flatMap((r) => [String(r.start), String(r.end)]);
  let request: Promise<Reply> = source.call(['RANGEDUMP', token, String(batchKeys), ...rangeArgs]);
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
      const reply = expectOk(await request, `RANGEDUMP on ${source.address}`);
      if (reply.type !== 'array' || reply.items === null || reply.items.length < 2) throw new MigrationError(`RANGEDUMP on ${source.address}: malformed reply`);
      const items = reply.items;
      const done = items[0]!.type === 'int' && items[0].value === 1;
      progress.keysScanned += items[1]!.type === 'int' ? items[1].value : 0;
      // Ask for the next batch at once: it is scanned while this one is imported.
      if (!done) request = source.call(['RANGEDUMP', token, String(batchKeys)]);
      if (items.length > 2) track(moveBatch(pool, source, items, to, progress));
      while (inFlight.size >= WINDOW && failure === undefined) await Promise.race(inFlight);
      if (failure !== undefined) throw failure;
      if (stop.reason !== undefined) throw new MigrationError(`stopped: another source failed`);
      if (done) break;
    }
  } finally {
    await Promise.all(inFlight);
  }
  if (failure !== undefined) throw failure;
}

/** IMPORT one dumped batch into its target(s); only once all hold it durably, DEL it at the source. */
async function moveBatch(pool: BackendPool, source: Backend, items: Reply[], to: HashRing, progress: MigrationProgress): Promise<void> {
  const byTarget = new Map<string, Buffer[]>();
  const keys: Buffer[] = [];
  for (let i = 2; i + 1 < items.length; i += 2) {
    const k = items[i]!;
    const v = items[i + 1]!;
    if (k.type !== 'bulk' || k.value === null || v.type !== 'bulk' || v.value === null) throw new MigrationError('RANGEDUMP: malformed pair');
    const target = to.ownerOfHash(hashBytes(k.value))!;
    let list = byTarget.get(target);
    if (list === undefined) byTarget.set(target, (list = []));
    list.push(k.value, v.value);
    keys.push(k.value);
  }
  const targets = [...byTarget.keys()];
  const imports = await Promise.all(targets.map((t) => pool.get(t).call(['IMPORT', ...byTarget.get(t)!])));
  imports.forEach((r, i) => expectOk(r, `IMPORT on ${targets[i]}`));
  expectOk(await source.call(['DEL', ...keys]), `DEL on ${source.address}`);
  progress.keysMoved += keys.length;
}
