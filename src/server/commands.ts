// What a kv-server does for each command it serves. Generic rules (arity, AUTH, QUIT) were
// already applied by ClientConnection; handlers parse their arguments and touch the store
// only through DurableStore, so every change reaches the WAL.
import type { CommandName } from '../common/commands/table.js';
import { ArgCursor } from '../common/commands/cursor.js';
import { clientReply, commandReply, configReply, helpReply, selectReply } from '../common/commands/introspection.js';
import { array, bulk, error, int, NIL, OK, PONG, simple, type Reply } from '../common/protocol/reply.js';
import { CommandError } from '../common/errors.js';
import { MAX_DUMP_KEYS } from '../common/limits.js';
import { MAX_DUMP_TARGETS } from './range-dump.js';
import { HashIntervals, type LabelledRange } from './hash-intervals.js';
import type { HashRange } from '../common/ring.js';
import { LATER, type Answer, type ClientConnection } from '../common/net/client-connection.js';
import { parseNodeAddress } from '../common/node-address.js';
import type { ServerState } from './server.js';
import { KeyState } from './store.js';

/** Index slots one DROPRANGE call examines (whole shards, at least one): a few milliseconds. */
const DROP_SLOTS_PER_CALL = 256 * 1024;

/** How long RANGEPUSH WAIT holds its reply while the push runs: the proxy's progress granularity. */
const PUSH_WAIT_MS = 100;

/** Reply now, or LATER through `conn.complete(slot, ...)`. */
type Handler = (state: ServerState, args: Buffer[], conn: ClientConnection, slot: number) => Answer;
type ServerCommand = Exclude<CommandName, 'quit' | 'auth' | 'add' | 'remove' | 'nodes' | 'migration'>;

export const SERVER_COMMANDS: Record<ServerCommand, Handler> = {
  ping: (_s, args) => (args.length > 2 ? error("ERR wrong number of arguments for 'ping' command") : args.length > 1 ? bulk(args[1]!) : PONG),

  echo: (_s, args) => bulk(args[1]!),

  set(s, args) {
    s.data.set(args[1]!, args[2]!);
    return OK;
  },

  get(s, args) {
    const value = s.data.get(args[1]!);
    return value === undefined ? NIL : bulk(value);
  },

  del(s, args) {
    let n = 0;
    for (let i = 1; i < args.length; i++) if (s.data.delete(args[i]!)) n++;
    return int(n);
  },

  exists(s, args) {
    let n = 0;
    for (let i = 1; i < args.length; i++) if (s.data.has(args[i]!)) n++;
    return int(n);
  },

  mget(s, args) {
    const items: Reply[] = [];
    for (let i = 1; i < args.length; i++) {
      const value = s.data.get(args[i]!);
      items.push(value === undefined ? NIL : bulk(value));
    }
    return array(items);
  },

  mset(s, args) {
    for (let i = 1; i < args.length; i += 2) s.data.set(args[i]!, args[i + 1]!);
    return OK;
  },

  dbsize(s) {
    s.data.readAll();
    return int(s.data.store.size);
  },
  info: (s, args) => bulk(Buffer.from(s.info(args[1]?.toString('latin1')))),
  command: (_s, args) => commandReply(args, 'server'),
  config: (s, args) => configReply(args, s.configSettings()),
  select: (_s, args) => selectReply(args),
  client: (_s, args, conn) => clientReply(args, conn),
  help: (_s, args) => helpReply(args, 'server'),

  bgrewriteaof(s) {
    if (s.compactor.inProgress) return simple('Background append only file rewriting already in progress');
    void s.compactor.start();
    return simple('Background append only file rewriting started');
  },

  nodeinfo: (s) => (s.data.readAll(), array([bulk('kvstore-server'), bulk(s.version), int(s.data.store.size), int(s.data.store.tombstoneCount)])),

  /**
   * RANGEPUSH START <token> <count> <rate> <n> <target 1> ... <target n> <start> <end> <label> ...
   *   Push the keys whose hash is in the ranges to their targets (label: index into the
   *   targets), `count` keys per batch, at most `rate` keys/s (0: no limit). Stops the push
   *   before, if any. OK once no batch of that one is in flight.
   * RANGEPUSH WAIT <token>: [done, scanned, moved] once the push ended or after a moment;
   *   ERR if it failed or is unknown.
   * RANGEPUSH STOP <token>: OK once no batch of the push is in flight.
   */
  rangepush(s, args, conn, slot) {
    const cursor = new ArgCursor(args, 'rangepush');
    const sub = cursor.text().toUpperCase();
    const token = cursor.text();
    const answer = (work: Promise<Reply>): Answer => {
      void work.then(
        (reply) => conn.complete(slot, reply),
        (err: unknown) => conn.complete(slot, error(`ERR ${(err as Error).message}`)),
      );
      return LATER;
    };
    if (sub === 'WAIT' || sub === 'STOP') {
      cursor.finish();
      if (sub === 'STOP') return answer(s.pushes.stop(token).then(() => OK));
      return answer(
        s.pushes.wait(token, PUSH_WAIT_MS).then((st) => {
          if (st === undefined) return error(`ERR no such push '${token}'`);
          if (st.state === 'failed') return error(`ERR push failed: ${st.error}`);
          if (st.state === 'stopped') return error('ERR push stopped');
          return array([int(st.state === 'done' ? 1 : 0), int(st.scanned), int(st.moved)]);
        }),
      );
    }
    if (sub !== 'START') throw new CommandError(`ERR unknown RANGEPUSH subcommand '${sub}' (START, WAIT or STOP)`);
    const count = cursor.uint(MAX_DUMP_KEYS);
    const rate = cursor.uint(1e9);
    const n = cursor.uint(MAX_DUMP_TARGETS);
    const targets: string[] = [];
    for (let i = 0; i < n; i++) {
      const raw = cursor.text();
      const address = parseNodeAddress(raw);
      if (address === undefined) throw new CommandError(`ERR invalid target address '${raw}'`);
      targets.push(address);
    }
    if (count === 0 || n === 0 || cursor.remaining === 0 || cursor.remaining % 3 !== 0) {
      throw new CommandError('ERR RANGEPUSH START needs count > 0, at least one target, and start/end/label triples');
    }
    const ranges: LabelledRange[] = [];
    while (cursor.remaining > 0) ranges.push({ start: cursor.uint(0xffffffff), end: cursor.uint(0xffffffff), target: cursor.uint(n - 1) });
    return answer(s.pushes.start({ token, count, rate, targets, ranges }).then(() => OK));
  },

  /**
   * DROPRANGE <from> <start> <end> [start end ...]: delete the live values whose hash is in the
   * ranges, from hash <from> on, a few shards per call (one WAL record each). Reply:
   * [done, next from, dropped].
   */
  droprange(s, args) {
    const cursor = new ArgCursor(args, 'droprange');
    const from = cursor.uint(0xffffffff);
    if (cursor.remaining % 2 !== 0) throw new CommandError('ERR DROPRANGE ranges come in start/end pairs');
    const ranges: HashRange[] = [];
    while (cursor.remaining > 0) ranges.push({ start: cursor.uint(0xffffffff), end: cursor.uint(0xffffffff) });
    cursor.finish();
    const to = s.data.store.shardSpanEnd(from, DROP_SLOTS_PER_CALL);
    const dropped = s.data.dropRanges(new HashIntervals(ranges).clip(from, to));
    const done = to === 0xffffffff;
    return array([int(done ? 1 : 0), int(done ? 0 : to + 1), int(dropped)]);
  },

  import(s, args) {
    if ((args.length - 1) % 2 !== 0) return error("ERR wrong number of arguments for 'import' command");
    let n = 0;
    for (let i = 1; i < args.length; i += 2) if (s.data.importIfAbsent(args[i]!, args[i + 1]!)) n++;
    return int(n);
  },

  xget(s, args) {
    const value = s.data.get(args[1]!);
    if (value !== undefined) return bulk(value);
    return s.data.isTombstoned(args[1]!) ? int(0) : NIL;
  },

  deltomb(s, args) {
    // One key: 1 if it was live, 0 if absent, -1 if it was already tombstoned (deleted earlier
    // in this move, so any copy the source still has is stale). Several keys: how many were live.
    if (args.length === 2) {
      const before = s.data.state(args[1]!);
      s.data.tombstone(args[1]!);
      return int(before === KeyState.Live ? 1 : before === KeyState.Tombstoned ? -1 : 0);
    }
    let n = 0;
    for (let i = 1; i < args.length; i++) if (s.data.tombstone(args[i]!)) n++;
    return int(n);
  },

  cleartombs(s) {
    s.data.clearTombstones();
    return OK;
  },

  reset(s) {
    s.dumps.clear();
    s.data.reset();
    s.log.warn('reset: all data and the WAL were dropped (node removed from the cluster)');
    return simple('OK');
  },
};
