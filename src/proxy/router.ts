// Routing data commands to their owners, including while a membership change moves ranges.
//
// Normal case: hash the key once, binary-search the ring, forward the request to the owner's
// pipelined connection; the reply fills the client's slot. No promise or closure is made.
//
// While a move is under way (`next` is set), a key whose owner differs between `ring` and
// `next` is "moving" from its source to its target. The rules (docs/rebalancing.md):
//  - writes go to the target only (SET; DEL leaves a tombstone there via DELTOMB);
//  - reads of a key written (or deleted) during the move ask the target, then the source, then
//    the target again; reads of any other moving key ask the source, then the target. The
//    proxy remembers which moving keys it wrote since the move began (every write passes
//    through it); after a restart, or past MAX_TRACKED_WRITES keys, it does not know, and
//    treats every moving key as written;
//  - the migration copies with IMPORT (insert if absent and not tombstoned), so a copy from the
//    source can never overwrite a newer write or revive a delete.
// The source's copy of a moving key is therefore frozen: nothing writes it but the migration,
// which deletes it only after the target has the batch durably.
import { hashBytes } from '../common/hash.js';
import type { HashRing } from '../common/ring.js';
import { keyPositions, type CommandSpec } from '../common/commands/table.js';
import { array, error, int, NIL, OK, type Reply } from '../common/protocol/reply.js';
import { LATER, LATER_EXCLUSIVE, type Answer, type ClientConnection } from '../common/net/client-connection.js';
import type { Backend, BackendPool } from '../common/net/backend.js';

const NO_NODES = error('ERR no storage nodes in the ring: ADD <host:port> first');

type Sub = (done: (reply: Reply) => void) => void;

/** Most moving keys whose writes a move remembers; past it, every moving key counts as written. */
export const MAX_TRACKED_WRITES = 1_000_000;

/** What a moving key's operation needs to know about the move. */
interface MoveWrites {
  /** A write to this moving key is about to be sent to its target. */
  noteWrite(key: Buffer): void;
  /** Has this moving key certainly not been written since the move began? */
  untouched(key: Buffer): boolean;
}

export class Router {
  private ring!: HashRing;
  private owners: Backend[] = [];
  private next: HashRing | undefined;
  private nextOwners: Backend[] = [];
  /** Multi-step operations on moving keys still under way, and who waits for them to end. */
  private movingInFlight = 0;
  private quietWaiters: (() => void)[] = [];
  /**
   * Moving keys (latin1) written or deleted since the move began; undefined when that is not
   * known (the move began before this process started, or too many keys were written).
   */
  private written: Set<string> | undefined;
  private readonly writes: MoveWrites = {
    noteWrite: (key) => {
      const written = this.written;
      if (written === undefined) return;
      written.add(key.toString('latin1'));
      if (written.size > MAX_TRACKED_WRITES) this.written = undefined;
    },
    untouched: (key) => this.written !== undefined && !this.written.has(key.toString('latin1')),
  };

  constructor(
    private readonly pool: BackendPool,
    ring: HashRing,
  ) {
    this.setRing(ring);
  }

  get current(): HashRing {
    return this.ring;
  }

  get moving(): HashRing | undefined {
    return this.next;
  }

  setRing(ring: HashRing): void {
    this.ring = ring;
    this.owners = ring.members.map((m) => this.pool.get(m));
    this.next = undefined;
    this.nextOwners = [];
    this.written = undefined;
  }

  /**
   * From now on, keys whose owner changes between the rings are served as moving. `tracked`:
   * nothing was written to a moving key before this call (a move planned by this process now),
   * so the writes from here on are all there are. Resuming a move already being served keeps
   * what is known about it.
   */
  beginMove(next: HashRing, tracked: boolean): void {
    if (this.next === undefined) this.written = tracked ? new Set() : undefined;
    this.next = next;
    this.nextOwners = next.members.map((m) => this.pool.get(m));
  }

  /**
   * Resolves when no operation that started on a moving key is still running. Called after
   * switching to the new ring and before committing it, so that no DELTOMB from the old move
   * can land after its tombstones were cleared.
   */
  quiesce(): Promise<void> {
    if (this.movingInFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.quietWaiters.push(resolve));
  }

  /** Wrap a moving-key operation so quiesce() can wait for it. */
  private track(op: Sub, done: (reply: Reply) => void): void {
    this.movingInFlight++;
    op((reply) => {
      if (--this.movingInFlight === 0 && this.quietWaiters.length > 0) {
        const waiters = this.quietWaiters;
        this.quietWaiters = [];
        for (const w of waiters) w();
      }
      done(reply);
    });
  }

  /** Every node that holds or will hold data: ring members, plus the target of a move. */
  allNodes(): Backend[] {
    const set = new Set<Backend>([...this.owners, ...this.nextOwners]);
    return [...set];
  }

  execute(conn: ClientConnection, spec: CommandSpec, args: Buffer[], slot: number): Answer {
    if (this.owners.length === 0) return NO_NODES;
    switch (spec.route) {
      case 'key':
        return this.single(conn, spec, args, slot);
      case 'keys':
        return this.multi(conn, spec, args, slot);
      case 'all':
        return this.everyNode(conn, args, slot);
      default:
        return error(`ERR '${spec.name}' is not a routed command`);
    }
  }

  /** [source, target] of a moving key's hash, or [owner, undefined] when it is not moving. */
  private locate(hash: number): [Backend, Backend | undefined] {
    const owner = this.owners[this.ring.ownerIndexOfHash(hash)]!;
    if (this.next === undefined) return [owner, undefined];
    const target = this.nextOwners[this.next.ownerIndexOfHash(hash)]!;
    return target === owner ? [owner, undefined] : [owner, target];
  }

  private single(conn: ClientConnection, spec: CommandSpec, args: Buffer[], slot: number): Answer {
    const [owner, target] = this.locate(hashBytes(args[1]!));
    if (target === undefined) {
      owner.sendToSlot(args, conn, slot);
      return LATER;
    }
    // Several steps on two nodes: later requests on this connection wait, so that e.g.
    // `DEL k` then `SET k v` cannot overtake each other.
    this.track(movingOp(spec.name, args.slice(1), owner, target, this.writes), (reply) => conn.complete(slot, reply));
    return LATER_EXCLUSIVE;
  }

  private multi(conn: ClientConnection, spec: CommandSpec, args: Buffer[], slot: number): Answer {
    const positions = keyPositions(spec, args.length);
    const width = spec.keyStep; // MSET carries a value after each key
    // Group the keys by owner; a moving key is its own group.
    const groups = new Map<Backend, number[]>();
    const moving: { index: number; source: Backend; target: Backend }[] = [];
    positions.forEach((pos, index) => {
      const [owner, target] = this.locate(hashBytes(args[pos]!));
      if (target !== undefined) moving.push({ index, source: owner, target });
      else {
        const list = groups.get(owner);
        if (list === undefined) groups.set(owner, [index]);
        else list.push(index);
      }
    });
    if (moving.length === 0 && groups.size === 1) {
      const [owner] = groups.keys();
      owner!.sendToSlot(args, conn, slot);
      return LATER;
    }
    const subs: { indexes: number[]; run: Sub }[] = [];
    for (const [owner, indexes] of groups) {
      const subArgs: Buffer[] = [args[0]!];
      for (const i of indexes) for (let w = 0; w < width; w++) subArgs.push(args[positions[i]! + w]!);
      subs.push({ indexes, run: (done) => owner.send(subArgs, done) });
    }
    for (const m of moving) {
      const pos = positions[m.index]!;
      const op = movingOp(spec.name, args.slice(pos, pos + width), m.source, m.target, this.writes);
      subs.push({ indexes: [m.index], run: (done) => this.track(op, done) });
    }
    gather(subs, positions.length, spec.name, (reply) => conn.complete(slot, reply));
    return moving.length > 0 ? LATER_EXCLUSIVE : LATER;
  }

  private everyNode(conn: ClientConnection, args: Buffer[], slot: number): Answer {
    const nodes = this.allNodes();
    let pending = nodes.length;
    let total = 0;
    let failure: Reply | undefined;
    for (const node of nodes) {
      node.send(args, (reply) => {
        if (reply.type === 'int') total += reply.value;
        else failure ??= reply.type === 'error' ? reply : error(`ERR unexpected reply from ${node.address}`);
        if (--pending === 0) conn.complete(slot, failure ?? int(total));
      });
    }
    return LATER;
  }
}

/** Run sub-requests in parallel and merge their replies into one, per command. */
function gather(subs: { indexes: number[]; run: Sub }[], keyCount: number, name: string, done: (reply: Reply) => void): void {
  let pending = subs.length;
  let failure: Reply | undefined;
  let sum = 0;
  const values: Reply[] = name === 'mget' ? new Array<Reply>(keyCount).fill(NIL) : [];
  for (const sub of subs) {
    sub.run((reply) => {
      if (reply.type === 'error') failure ??= reply;
      else if (reply.type === 'int') sum += reply.value;
      else if (reply.type === 'array' && reply.items !== null) sub.indexes.forEach((k, i) => (values[k] = reply.items![i] ?? NIL));
      else if (name === 'mget' && reply.type === 'bulk') values[sub.indexes[0]!] = reply;
      if (--pending > 0) return;
      if (failure !== undefined) done(failure);
      else if (name === 'mget') done(array(values));
      else if (name === 'mset') done(OK);
      else done(int(sum));
    });
  }
}

/**
 * One key's operation while it moves from `source` to `target`. `args` is the key (and, for
 * writes, the value). Replies have the shape of the single-key command (MGET -> bulk).
 */
function movingOp(name: string, args: Buffer[], source: Backend, target: Backend, writes: MoveWrites): Sub {
  // The steps run as replies come in, after the client's read buffer was reused: keep copies.
  const rest = args.map((b) => Buffer.from(b));
  const key = rest[0]!;
  switch (name) {
    case 'set':
    case 'mset':
      return (done) => {
        writes.noteWrite(key);
        target.send(['SET', key, rest[1]!], done);
      };
    case 'get':
    case 'mget':
      return (done) => readMoving(key, source, target, writes.untouched(key), done, (r) => r);
    case 'exists':
      return (done) => readMoving(key, source, target, writes.untouched(key), done, (r) => (r.type === 'bulk' && r.value !== null ? int(1) : int(0)));
    case 'del':
      // Ask the source first: if it no longer has the key, the migration already copied it,
      // so the target's DELTOMB sees it live. Either way the tombstone blocks later copies.
      return (done) => {
        writes.noteWrite(key);
        source.send(['EXISTS', key], (had) => {
          if (had.type === 'error') return done(had);
          target.send(['DELTOMB', key], (live) => {
            if (live.type === 'error') return done(live);
            const t = live.type === 'int' ? live.value : 0;
            // -1: already deleted during this move, so the source's copy is stale.
            if (t < 0) return done(int(0));
            done(int(t > 0 || (had.type === 'int' && had.value > 0) ? 1 : 0));
          });
        });
      };
    default:
      return (done) => done(error(`ERR '${name}' cannot run on a moving key`));
  }
}

/**
 * A key written during the move: target, then source, then target again. The source's copy is
 * frozen and deleted only after the target has it durably, so a miss on both first reads means
 * the copy happened in between, and the second target read sees it.
 *
 * A key not written during the move (`untouched`): its newest value is the source's frozen
 * copy, which the source keeps until the target has it durably. So the source first (one hop
 * while the copy runs, and it spares the target, which is busy importing); on a miss, the
 * target, which by then holds whatever the source had.
 */
function readMoving(key: Buffer, source: Backend, target: Backend, untouched: boolean, done: (r: Reply) => void, shape: (r: Reply) => Reply): void {
  if (untouched) return sourceThenTarget(key, source, target, done, shape);
  target.send(['XGET', key], (t) => {
    if (t.type === 'error') return done(t);
    if (t.type === 'int') return done(shape(NIL)); // tombstone: deleted during the move
    if (t.type === 'bulk' && t.value !== null) return done(shape(t));
    sourceThenTarget(key, source, target, done, shape);
  });
}

/** GET on the source; on a miss, XGET on the target, whose answer is then the newest state. */
function sourceThenTarget(key: Buffer, source: Backend, target: Backend, done: (r: Reply) => void, shape: (r: Reply) => Reply): void {
  source.send(['GET', key], (s) => {
    if (s.type === 'error') return done(s);
    if (s.type === 'bulk' && s.value !== null) return done(shape(s));
    target.send(['XGET', key], (t) => {
      if (t.type === 'error') return done(t);
      done(shape(t.type === 'bulk' ? t : NIL));
    });
  });
}
