// The command table: the one place that says what each command is. The server, the proxy and
// kv-client all read it (arity checks, key positions for routing, the text reply style, and
// HELP), so adding a command starts here.
import type { TextStyle } from '../protocol/text.js';

export type CommandFlag =
  /** Changes data: goes through the WAL on a server. */
  | 'write'
  | 'readonly'
  /** Changes cluster membership or wipes data: needs an authenticated client. */
  | 'admin'
  /** Allowed before AUTH. */
  | 'noauth'
  /** Proxy-to-server only: not routed from clients, hidden from HELP. */
  | 'internal';

/** How the proxy serves a command. */
export type Route =
  /** Exactly one key: forward to its owner. */
  | 'key'
  /** Several keys: split by owner, fan out, merge the replies. */
  | 'keys'
  /** Ask every node and combine (DBSIZE). */
  | 'all'
  /** Answered by whichever process received it. */
  | 'local';

export interface CommandSpec {
  readonly name: string;
  /** Redis convention, counting the name: N means exactly N args, -N means at least N. */
  readonly arity: number;
  /** First key position (0 = no keys), last (-1 = the last argument) and step. */
  readonly firstKey: number;
  readonly lastKey: number;
  readonly keyStep: number;
  readonly flags: readonly CommandFlag[];
  /** Which processes implement it. */
  readonly on: 'both' | 'proxy' | 'server';
  readonly route: Route;
  readonly text: TextStyle;
  /** In the text protocol, this argument takes the rest of the line (spaces included). */
  readonly textRest?: number;
  readonly usage: string;
  readonly summary: string;
}

type Spec = Omit<CommandSpec, 'firstKey' | 'lastKey' | 'keyStep' | 'text' | 'route'> &
  Partial<Pick<CommandSpec, 'firstKey' | 'lastKey' | 'keyStep' | 'text' | 'route'>>;

function spec(s: Spec): CommandSpec {
  return { firstKey: 0, lastKey: 0, keyStep: 1, text: 'plain', route: 'local', ...s };
}

export const COMMANDS = {
  ping: spec({ name: 'ping', arity: -1, flags: ['noauth'], on: 'both', usage: 'PING [message]', summary: 'Check the connection: replies PONG.' }),
  echo: spec({ name: 'echo', arity: 2, flags: [], on: 'both', textRest: 1, usage: 'ECHO <message>', summary: 'Reply with the message (redis-cli --pipe ends its stream with one).' }),
  quit: spec({ name: 'quit', arity: -1, flags: ['noauth'], on: 'both', usage: 'QUIT', summary: 'Close the connection.' }),
  auth: spec({ name: 'auth', arity: -2, flags: ['noauth'], on: 'both', usage: 'AUTH <password>', summary: 'Authenticate when the process runs with --password.' }),
  set: spec({
    name: 'set', arity: 3, firstKey: 1, lastKey: 1, flags: ['write'], on: 'both', route: 'key', textRest: 2,
    usage: 'SET <key> <value>', summary: 'Store a value. In the text protocol the value is the rest of the line.',
  }),
  get: spec({ name: 'get', arity: 2, firstKey: 1, lastKey: 1, flags: ['readonly'], on: 'both', route: 'key', text: 'value', usage: 'GET <key>', summary: 'Read a value: VALUE <value> or NOT_FOUND.' }),
  del: spec({ name: 'del', arity: -2, firstKey: 1, lastKey: -1, flags: ['write'], on: 'both', route: 'keys', text: 'deleted', usage: 'DEL <key> [key ...]', summary: 'Delete keys: DELETED or NOT_FOUND (RESP: the number deleted).' }),
  exists: spec({ name: 'exists', arity: -2, firstKey: 1, lastKey: -1, flags: ['readonly'], on: 'both', route: 'keys', usage: 'EXISTS <key> [key ...]', summary: 'Count how many of the keys exist.' }),
  mget: spec({ name: 'mget', arity: -2, firstKey: 1, lastKey: -1, flags: ['readonly'], on: 'both', route: 'keys', text: 'values', usage: 'MGET <key> [key ...]', summary: 'Read several values at once.' }),
  mset: spec({ name: 'mset', arity: -3, firstKey: 1, lastKey: -1, keyStep: 2, flags: ['write'], on: 'both', route: 'keys', usage: 'MSET <key> <value> [key value ...]', summary: 'Store several values (text protocol: values without spaces).' }),
  dbsize: spec({ name: 'dbsize', arity: 1, flags: ['readonly'], on: 'both', route: 'all', usage: 'DBSIZE', summary: 'Number of keys (through the proxy: summed over all nodes).' }),
  info: spec({ name: 'info', arity: -1, flags: [], on: 'both', text: 'lines', usage: 'INFO [section]', summary: 'Status as Redis-style key:value lines.' }),
  command: spec({ name: 'command', arity: -1, flags: [], on: 'both', usage: 'COMMAND [COUNT|DOCS|INFO]', summary: 'Describe the command table (for redis-cli).' }),
  config: spec({ name: 'config', arity: -2, flags: [], on: 'both', usage: 'CONFIG GET <parameter>', summary: 'Read configuration (for redis-benchmark and friends).' }),
  select: spec({ name: 'select', arity: 2, flags: [], on: 'both', usage: 'SELECT 0', summary: 'Only database 0 exists.' }),
  client: spec({ name: 'client', arity: -2, flags: ['noauth'], on: 'both', usage: 'CLIENT SETNAME|GETNAME|ID ...', summary: 'Connection metadata (accepted for Redis client libraries).' }),
  bgrewriteaof: spec({ name: 'bgrewriteaof', arity: 1, flags: ['admin'], on: 'server', usage: 'BGREWRITEAOF', summary: 'Compact the WAL now, online (it also happens automatically).' }),
  help: spec({ name: 'help', arity: -1, flags: ['noauth'], on: 'both', text: 'lines', usage: 'HELP [command]', summary: 'List commands, or describe one.' }),

  add: spec({ name: 'add', arity: 2, flags: ['admin'], on: 'proxy', usage: 'ADD <host:port>', summary: 'Add a storage node and move the key ranges it now owns onto it.' }),
  remove: spec({ name: 'remove', arity: 2, flags: ['admin'], on: 'proxy', usage: 'REMOVE <host:port>', summary: "Move a node's keys to the other nodes, then remove and reset it." }),
  nodes: spec({ name: 'nodes', arity: 1, flags: [], on: 'proxy', text: 'lines', usage: 'NODES', summary: 'List ring members with health, key count and ring share.' }),
  migration: spec({ name: 'migration', arity: 1, flags: [], on: 'proxy', text: 'lines', usage: 'MIGRATION', summary: 'State and progress of the current membership change.' }),

  // Proxy -> server, for migration and health checks. RESP only in practice; binary-safe.
  nodeinfo: spec({ name: 'nodeinfo', arity: 1, flags: ['internal'], on: 'server', usage: 'NODEINFO', summary: 'Identify a kv-server: [kvstore-server, version, keys, tombstones].' }),
  rangepush: spec({ name: 'rangepush', arity: -3, flags: ['internal'], on: 'server', usage: 'RANGEPUSH START|WAIT|STOP <token> ...', summary: 'Push the keys of ring ranges straight to their target servers (a source during a move), and follow that push.' }),
  droprange: spec({ name: 'droprange', arity: -2, flags: ['internal', 'write'], on: 'server', usage: 'DROPRANGE <from> [start end ...]', summary: 'Delete the keys whose hash is in the given ring ranges, a few shards per call from hash <from> on (a source after a move).' }),
  import: spec({ name: 'import', arity: -3, flags: ['internal', 'write'], on: 'server', usage: 'IMPORT <key> <value> [key value ...]', summary: 'Insert keys that are absent (and not tombstoned); one fsync per batch.' }),
  xget: spec({ name: 'xget', arity: 2, flags: ['internal', 'readonly'], on: 'server', usage: 'XGET <key>', summary: 'Read during a move: the value, nil if absent, or 0 if tombstoned.' }),
  deltomb: spec({ name: 'deltomb', arity: -2, flags: ['internal', 'write'], on: 'server', usage: 'DELTOMB <key> [key ...]', summary: 'Delete during a move, leaving tombstones that block stale imports (one key: 1 live, 0 absent, -1 already tombstoned).' }),
  cleartombs: spec({ name: 'cleartombs', arity: 1, flags: ['internal', 'write'], on: 'server', usage: 'CLEARTOMBS', summary: 'Forget all tombstones (the move they guarded is over).' }),
  reset: spec({ name: 'reset', arity: 1, flags: ['internal', 'admin', 'write'], on: 'server', usage: 'RESET', summary: 'Drop all data and truncate the WAL (used by REMOVE).' }),
} as const satisfies Record<string, CommandSpec>;

export type CommandName = keyof typeof COMMANDS;

const BY_NAME: ReadonlyMap<string, CommandSpec> = new Map(Object.entries(COMMANDS));
/** Lower- and upper-case spellings, so the usual cases are found without lower-casing. */
const BY_SPELLING: ReadonlyMap<string, CommandSpec> = new Map(Object.values(COMMANDS).flatMap((c) => [[c.name, c] as const, [c.name.toUpperCase(), c] as const]));

/** Look up a command by its name as sent (any case). */
export function lookupCommand(name: Buffer | string): CommandSpec | undefined {
  const text = typeof name === 'string' ? name : name.toString('latin1');
  return BY_SPELLING.get(text) ?? BY_NAME.get(text.toLowerCase());
}

export function allCommands(): CommandSpec[] {
  return [...BY_NAME.values()];
}

/** For the text decoder: which commands take the rest of the line as their last argument. */
export const TEXT_REST: ReadonlyMap<string, number> = new Map(
  allCommands().flatMap((c) => (c.textRest === undefined ? [] : [[c.name, c.textRest] as const])),
);

export function hasFlag(spec: CommandSpec, flag: CommandFlag): boolean {
  return spec.flags.includes(flag);
}

/** `ERR ...` text for a bad argument count, or undefined when the count is fine. */
export function arityError(spec: CommandSpec, argc: number): string | undefined {
  const ok = spec.arity >= 0 ? argc === spec.arity : argc >= -spec.arity;
  if (!ok) return `ERR wrong number of arguments for '${spec.name}' command`;
  if (spec.keyStep === 2 && spec.firstKey > 0 && (argc - spec.firstKey) % 2 !== 0) {
    return `ERR wrong number of arguments for '${spec.name}' command`;
  }
  return undefined;
}

/** Positions of the key arguments in a request. */
export function keyPositions(spec: CommandSpec, argc: number): number[] {
  if (spec.firstKey === 0) return [];
  const last = spec.lastKey < 0 ? argc + spec.lastKey : spec.lastKey;
  const out: number[] = [];
  for (let i = spec.firstKey; i <= last; i += spec.keyStep) out.push(i);
  return out;
}
