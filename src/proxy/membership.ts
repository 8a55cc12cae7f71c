// ADD and REMOVE: one membership change at a time, crash-safe.
//
// A change is a three-step protocol (docs/rebalancing.md):
//   1. plan:   persist {move: {kind, node, from, to}} in the state file, then switch the Router
//              to serve the moving ranges from both rings (writes to targets);
//   2. copy:   migrate() streams the moving keys, source -> target, batch by batch;
//   3. commit: persist {members: to, move: null, cleanup}, switch the Router to the new ring,
//              then run the cleanup (RESET a removed node, CLEARTOMBS on targets).
// The state file is replaced atomically at each step, so a proxy killed at any point restarts
// in exactly one of: before 1 (nothing happened), between 1 and 3 (it resumes the copy, which
// is idempotent), or after 3 (it retries the idempotent cleanup).
import { HashRing } from '../common/ring.js';
import { parseNodeAddress } from '../common/node-address.js';
import { error, simple, type Reply } from '../common/protocol/reply.js';
import type { Logger } from '../common/logger.js';
import type { BackendPool } from '../common/net/backend.js';
import type { Router } from './router.js';
import { StateFile, type PendingMove, type ProxyState } from './ring-state.js';
import { DEFAULT_BATCH_KEYS, DEFAULT_MIGRATE_RATE, idleProgress, migrate, type MigrationProgress } from './migration.js';

export class Membership {
  progress: MigrationProgress = idleProgress();
  private busy = false;

  constructor(
    private state: ProxyState,
    private readonly file: StateFile,
    private readonly router: Router,
    private readonly pool: BackendPool,
    private readonly log: Logger,
    private readonly batchKeys = DEFAULT_BATCH_KEYS,
    /** Most keys moved per second (0: no limit). */
    readonly maxKeysPerSec = DEFAULT_MIGRATE_RATE,
  ) {}

  get members(): readonly string[] {
    return this.state.members;
  }

  get pendingMove(): PendingMove | null {
    return this.state.move;
  }

  get vnodes(): number {
    return this.state.vnodes;
  }

  private save(next: ProxyState): void {
    this.file.save(next);
    this.state = next;
  }

  /** At startup: finish an interrupted move, and any cleanup left over. */
  async recover(): Promise<void> {
    const move = this.state.move;
    if (move !== null) {
      this.log.warn({ kind: move.kind, node: move.node }, 'resuming a membership change interrupted by a restart');
      const reply = await this.run(move, false);
      if (reply.type === 'error') this.log.error({ reason: reply.message }, 'resumed membership change did not finish; retry the same ADD/REMOVE');
      return;
    }
    await this.cleanup();
  }

  async add(arg: string): Promise<Reply> {
    const node = parseNodeAddress(arg);
    if (node === undefined) return error(`ERR invalid node address '${arg}': expected host:port with a port from 1 to 65535`);
    if (this.busy) return error('ERR membership change in progress');
    const pending = this.state.move;
    if (pending !== null) {
      if (pending.kind === 'add' && pending.node === node) return this.run(pending, false);
      return error(`ERR membership change in progress (${pending.kind.toUpperCase()} ${pending.node} is unfinished; repeat it to resume)`);
    }
    if (this.state.members.includes(node)) return simple(`OK already a member ${node}`);
    this.busy = true;
    try {
      const blocked = await this.finishCleanup();
      if (blocked !== undefined) return error(blocked);
      const check = await this.healthCheck(node);
      if (check !== undefined) {
        this.pool.drop(node);
        return error(check);
      }
      const move: PendingMove = { kind: 'add', node, from: [...this.state.members], to: [...this.state.members, node], startedAt: Date.now() };
      this.save({ ...this.state, move });
    } finally {
      this.busy = false;
    }
    return this.run(this.state.move!, true);
  }

  async remove(arg: string): Promise<Reply> {
    const node = parseNodeAddress(arg);
    if (node === undefined) return error(`ERR invalid node address '${arg}': expected host:port with a port from 1 to 65535`);
    if (this.busy) return error('ERR membership change in progress');
    const pending = this.state.move;
    if (pending !== null) {
      if (pending.kind === 'remove' && pending.node === node) return this.run(pending, false);
      return error(`ERR membership change in progress (${pending.kind.toUpperCase()} ${pending.node} is unfinished; repeat it to resume)`);
    }
    if (!this.state.members.includes(node)) return error(`ERR ${node} is not a member of the ring`);
    if (this.state.members.length === 1) return error(`ERR ${node} is the only node; ADD another node before removing it`);
    this.busy = true;
    let blocked: string | undefined;
    try {
      blocked = await this.finishCleanup();
    } finally {
      this.busy = false;
    }
    if (blocked !== undefined) return error(blocked);
    const move: PendingMove = { kind: 'remove', node, from: [...this.state.members], to: this.state.members.filter((m) => m !== node), startedAt: Date.now() };
    this.save({ ...this.state, move });
    return this.run(move, true);
  }

  /** Is `node` a kv-server we may add? Returns the reason it is not, or undefined. */
  private async healthCheck(node: string): Promise<string | undefined> {
    const backend = this.pool.get(node);
    const reply = await backend.call(['NODEINFO']);
    if (reply.type === 'error') {
      // Something answered, but not in RESP: a web server, a database of another kind...
      if (/protocol error/i.test(reply.message)) return `ERR ${node} is not a kv-server (it answered something that is not RESP)`;
      return reply.message.startsWith('ERR node') ? reply.message : `ERR ${node} is not a kv-server (NODEINFO: ${reply.message})`;
    }
    if (reply.type !== 'array' || reply.items === null || reply.items[0]?.type !== 'bulk' || reply.items[0].value?.toString() !== 'kvstore-server') {
      return `ERR ${node} is not a kv-server`;
    }
    const keys = reply.items[2]?.type === 'int' ? reply.items[2].value : 0;
    if (keys > 0 && this.state.members.length > 0) {
      return `ERR ${node} already holds ${keys} keys; it may belong to another cluster. Start it with an empty --dir, or REMOVE it from its own cluster first`;
    }
    return undefined;
  }

  /** `fresh`: planned just now by this process (no write has reached a moving key yet). */
  private async run(move: PendingMove, fresh: boolean): Promise<Reply> {
    if (this.busy) return error('ERR membership change in progress');
    this.busy = true;
    const started = performance.now();
    const from = new HashRing(move.from, this.state.vnodes);
    const to = new HashRing(move.to, this.state.vnodes);
    // A move this process just planned has had no writes yet; a resumed one may have had some.
    this.router.beginMove(to, fresh);
    this.progress = { ...idleProgress(), state: 'running', kind: move.kind, node: move.node, startedAt: Date.now() };
    this.log.info({ kind: move.kind, node: move.node }, move.kind === 'add' ? 'rebalancing for new node' : 'evacuating node');
    try {
      await migrate(this.pool, from, to, this.progress, this.batchKeys, this.maxKeysPerSec);
    } catch (err) {
      this.progress.state = 'failed';
      this.progress.error = (err as Error).message;
      this.progress.finishedAt = Date.now();
      this.busy = false;
      this.log.error({ kind: move.kind, node: move.node, err: (err as Error).message }, 'membership change interrupted; the cluster keeps serving, retry to finish');
      return error(`ERR ${move.kind.toUpperCase()} ${move.node} interrupted: ${(err as Error).message}. No data was lost; repeat the command to finish the move`);
    }
    // Commit: route by the new ring, let in-flight moving-key operations finish, persist the
    // new ring, then the idempotent cleanup (tombstones are safe to clear only now).
    this.router.setRing(to);
    try {
      await this.router.quiesce();
      const cleanup = {
        reset: move.kind === 'remove' ? [...new Set([...this.state.cleanup.reset, move.node])] : this.state.cleanup.reset,
        clearTombstones: [...new Set([...this.state.cleanup.clearTombstones, ...this.progress.targets])],
      };
      this.save({ ...this.state, members: move.to, move: null, cleanup });
    } catch (err) {
      // The state file could not be written: keep serving the move as planned (it is still
      // planned on disk) and let a retry commit it.
      this.router.setRing(from);
      // Writes in between went to the new owners as non-moving keys: not tracked.
      this.router.beginMove(to, false);
      this.progress.state = 'failed';
      this.progress.error = `could not save the ring state: ${(err as Error).message}`;
      this.busy = false;
      return error(`ERR ${move.kind.toUpperCase()} ${move.node}: ${this.progress.error}; repeat the command to finish the move`);
    }
    this.progress.state = 'done';
    this.progress.finishedAt = Date.now();
    const ms = Math.round(performance.now() - started);
    this.log.info({ kind: move.kind, node: move.node, moved: this.progress.keysMoved, scanned: this.progress.keysScanned, ms }, 'membership change complete');
    try {
      await this.cleanup();
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'cleanup after the move failed; it will be retried');
    } finally {
      this.busy = false;
    }
    const { keysMoved, keysScanned } = this.progress;
    return move.kind === 'add'
      ? simple(`OK added ${move.node} moved=${keysMoved} scanned=${keysScanned} ms=${ms}`)
      : simple(`OK removed ${move.node} moved=${keysMoved} scanned=${keysScanned} ms=${ms}`);
  }

  /**
   * Before a new move: the previous one's tombstones must be gone, or they could block this
   * move's copies. Returns why a new move cannot start yet, if it cannot.
   */
  private async finishCleanup(): Promise<string | undefined> {
    await this.cleanup();
    const stuck = this.state.cleanup.clearTombstones;
    if (stuck.length === 0) return undefined;
    return `ERR the previous move's cleanup has not finished: ${stuck.join(', ')} unreachable (CLEARTOMBS); bring it back and retry`;
  }

  /** RESET removed nodes and clear tombstones on targets; whatever fails is retried later. */
  private async cleanup(): Promise<void> {
    const { reset, clearTombstones } = this.state.cleanup;
    if (reset.length === 0 && clearTombstones.length === 0) return;
    const left = { reset: [] as string[], clearTombstones: [] as string[] };
    for (const node of reset) {
      if (this.state.members.includes(node)) continue; // re-added since: never wipe a member
      const reply = await this.pool.get(node).call(['RESET']);
      if (reply.type === 'error') {
        left.reset.push(node);
        this.log.warn({ node, reason: reply.message }, 'could not reset removed node; will retry');
      } else this.pool.drop(node);
    }
    for (const node of clearTombstones) {
      const reply = await this.pool.get(node).call(['CLEARTOMBS']);
      if (reply.type === 'error') left.clearTombstones.push(node);
    }
    this.save({ ...this.state, cleanup: left });
  }
}
