// A source's side of a move: it pushes the keys of the ranges it loses straight to their
// targets, server to server, as Redis Cluster's MIGRATE and Codis's slotsmgrt do. The proxy
// starts the push and follows its progress (RANGEPUSH START / WAIT / STOP); batches never pass
// through it, so a move costs the proxy, which also serves every client, nothing per key.
//
// One push runs per server at a time. It walks the store with a RangeDumps cursor, encodes each
// batch as one `IMPORT k v ...` per target (insert-if-absent, one fsync per batch there), and
// keeps a bounded number of batches in flight. A batch counts as moved only once every target
// it went to acknowledged it durably. A value from a WAL group that is not durable yet is sent
// only after that group is: a target must never hold what a crash here could take back.
//
// Starting a push stops the one before it and waits until none of its batches is in flight, so
// a retried move never races a batch of an earlier attempt (whose proxy may have died).
import { setImmediate as nextTurn } from 'node:timers/promises';
import { BackendPool, type BackendOptions } from '../common/net/backend.js';
import type { Reply } from '../common/protocol/reply.js';
import type { LabelledRange } from './hash-intervals.js';
import { encodeDumpFrames, type RangeDumps } from './range-dump.js';

/**
 * Batches of one push in flight at once (each one IMPORT per target); the next one is scanned
 * meanwhile. A target serves an IMPORT in one go, so every batch queued there delays its
 * clients: with one per source, an ADD with three sources queues three at most.
 */
export const PUSH_WINDOW = 1;

export interface PushPlan {
  token: string;
  /** Keys per batch, all targets together. */
  count: number;
  /** Most keys pushed per second (0: as fast as the targets take them). */
  rate: number;
  /** host:port of each target; a range's label is an index into this. */
  targets: string[];
  ranges: LabelledRange[];
}

export interface PushStatus {
  state: 'running' | 'done' | 'failed' | 'stopped';
  scanned: number;
  moved: number;
  error: string;
}

/** What a push needs from its server. */
export interface PushContext {
  dumps: RangeDumps;
  /** Resolves once WAL groups up to `epoch` are durable: undefined, or why they failed. */
  whenSettled(epoch: number): Promise<string | undefined>;
  /** For the connections to the targets (the same password as this server's). */
  backend: BackendOptions;
}

/** Holds a push to `rate` keys per second on average (0: no limit). */
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

class Push {
  readonly status: PushStatus = { state: 'running', scanned: 0, moved: 0, error: '' };
  /** Settles when nothing of this push is in flight any more. */
  readonly finished: Promise<void>;
  private stopping = false;
  private readonly watchers = new Set<() => void>();

  constructor(
    readonly plan: PushPlan,
    private readonly ctx: PushContext,
  ) {
    this.finished = this.run().then(
      () => {
        this.status.state = this.stopping ? 'stopped' : 'done';
      },
      (err: unknown) => {
        this.status.state = 'failed';
        this.status.error = (err as Error).message;
      },
    );
    void this.finished.then(() => this.notify());
  }

  stop(): Promise<void> {
    this.stopping = true;
    return this.finished;
  }

  /** Resolves when the push ends, or after `ms`, whichever is first. */
  progress(ms: number): Promise<void> {
    if (this.status.state !== 'running') return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.watchers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.watchers.add(done);
    });
  }

  private notify(): void {
    for (const w of [...this.watchers]) w();
  }

  private async run(): Promise<void> {
    const { plan, ctx } = this;
    const pool = new BackendPool(ctx.backend);
    const pacer = new Pacer(plan.rate);
    const inFlight = new Set<Promise<void>>();
    let failure: unknown;
    try {
      let ranges: LabelledRange[] | undefined = plan.ranges;
      while (!this.stopping) {
        const batch = ctx.dumps.next(plan.token, plan.count, ranges);
        ranges = undefined;
        if (batch === undefined) throw new Error('the dump cursor expired');
        this.status.scanned += batch.scanned;
        const keys = batch.keys.length;
        if (keys > 0) {
          // Encode now: the batch holds views into the store, valid until the next write.
          const frames = encodeDumpFrames(batch);
          const failed = await ctx.whenSettled(batch.dependency);
          if (failed !== undefined) throw new Error(`a value to push was in a WAL group that failed: ${failed}`);
          await pacer.take(keys);
          // This batch was scanned while the one before was being imported; it goes once that one is in.
          while (inFlight.size >= PUSH_WINDOW && failure === undefined) await Promise.race(inFlight);
          if (failure !== undefined) throw failure;
          const sent = this.send(pool, frames, keys).catch((err: unknown) => {
            failure ??= err;
          });
          inFlight.add(sent);
          void sent.finally(() => inFlight.delete(sent));
        }
        if (failure !== undefined) throw failure;
        if (batch.done) break;
        // Let clients in between two batches (scanning one holds the event loop).
        await nextTurn();
      }
      await Promise.all(inFlight);
      if (failure !== undefined) throw failure;
    } finally {
      // Nothing of this push may still be in flight once it is reported as over.
      await Promise.all(inFlight);
      ctx.dumps.end(plan.token);
      pool.close();
    }
  }

  /** IMPORT one batch into its target(s); resolves once all of them hold it durably. */
  private async send(pool: BackendPool, frames: Buffer[], keys: number): Promise<void> {
    const { targets } = this.plan;
    // The labels in use: frames[i] is target i's IMPORT, empty (or absent) when it gets no key.
    const used = targets.flatMap((_t, i) => ((frames[i]?.length ?? 0) > 0 ? [i] : []));
    // Wait for every reply before judging any: nothing may be in flight once this fails.
    const replies = await Promise.all(used.map((i) => pool.get(targets[i]!).callEncoded(frames[i]!)));
    replies.forEach((r: Reply, j) => {
      if (r.type === 'error') throw new Error(`IMPORT on ${targets[used[j]!]}: ${r.message}`);
    });
    this.status.moved += keys;
  }
}

/** The server's pushes: at most one running. */
export class RangePushes {
  private current: Push | undefined;
  /** The STARTs, one after the other: each stops the push before it, then begins its own. */
  private starting: Promise<void> = Promise.resolve();

  constructor(private readonly ctx: PushContext) {}

  get active(): number {
    return this.current?.status.state === 'running' ? 1 : 0;
  }

  /** Stop the push before (waiting until none of its batches is in flight), then start `plan`. */
  start(plan: PushPlan): Promise<void> {
    // Chained: two STARTs at once would both wait for the same push to stop, and the push the
    // first one began would then be replaced without being stopped.
    this.starting = this.starting.then(async () => {
      if (this.current !== undefined) await this.current.stop();
      this.current = new Push(plan, this.ctx);
    });
    return this.starting;
  }

  /** The status of push `token` once it ended or `ms` passed; undefined if it is not the latest push. */
  async wait(token: string, ms: number): Promise<PushStatus | undefined> {
    const push = this.current;
    if (push?.plan.token !== token) return undefined;
    await push.progress(ms);
    return { ...push.status };
  }

  /** Stop push `token` (if it is the latest) and wait until none of its batches is in flight. */
  async stop(token: string): Promise<void> {
    if (this.current?.plan.token === token) await this.current.stop();
  }

  /** Stop whatever runs (server shutdown). */
  async close(): Promise<void> {
    await this.current?.stop();
  }
}
