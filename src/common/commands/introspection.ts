// Replies to the commands Redis tooling sends before it does anything useful: COMMAND,
// CONFIG GET, CLIENT, SELECT and HELP. Shared by the server and the proxy so that redis-cli,
// redis-benchmark and ioredis behave the same against either.
import { allCommands, hasFlag, lookupCommand, type CommandSpec } from './table.js';
import { array, bulk, error, int, OK, simple, NIL, type Reply } from '../protocol/reply.js';
import { ArgCursor } from './cursor.js';

export type Side = 'server' | 'proxy';

export function servesOn(spec: CommandSpec, side: Side): boolean {
  return spec.on === 'both' || spec.on === side;
}

function commandInfo(spec: CommandSpec): Reply {
  const flags = spec.flags.filter((f) => f === 'write' || f === 'readonly' || f === 'admin').map((f) => simple(f));
  return array([bulk(spec.name), int(spec.arity), array(flags), int(spec.firstKey), int(spec.lastKey), int(spec.firstKey === 0 ? 0 : spec.keyStep)]);
}

export function commandReply(args: Buffer[], side: Side): Reply {
  const specs = allCommands().filter((s) => servesOn(s, side));
  const cursor = new ArgCursor(args, 'command');
  const sub = cursor.optionalText()?.toLowerCase();
  if (sub === undefined) return array(specs.map(commandInfo));
  if (sub === 'count') {
    cursor.finish();
    return int(specs.length);
  }
  if (sub === 'info') {
    const names = [];
    while (cursor.remaining > 0) names.push(cursor.text());
    return array((names.length === 0 ? specs : names.map((n) => lookupCommand(n))).map((s) => (s && servesOn(s, side) ? commandInfo(s) : NIL)));
  }
  if (sub === 'docs') {
    // redis-cli asks for docs to drive its hints; an empty map is a valid answer.
    const items: Reply[] = [];
    for (const s of specs) items.push(bulk(s.name), array([bulk('summary'), bulk(s.summary)]));
    return array(items);
  }
  return error(`ERR unknown subcommand '${sub}'. Try COMMAND HELP.`);
}

export function configReply(args: Buffer[], settings: Record<string, string>): Reply {
  const cursor = new ArgCursor(args, 'config');
  const sub = cursor.text().toLowerCase();
  if (sub === 'get') {
    const out: Reply[] = [];
    while (cursor.remaining > 0) {
      const pattern = globToRegExp(cursor.text().toLowerCase());
      for (const [k, v] of Object.entries(settings)) if (pattern.test(k)) out.push(bulk(k), bulk(v));
    }
    return array(out);
  }
  if (sub === 'resetstat') return OK;
  return error(`ERR CONFIG ${sub.toUpperCase()} is not supported (only CONFIG GET)`);
}

function globToRegExp(glob: string): RegExp {
  const escaped = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${escaped}$`);
}

export function clientReply(args: Buffer[], conn: { id: number; name: string; authenticated: boolean; noEvict: boolean }): Reply {
  const cursor = new ArgCursor(args, 'client');
  const sub = cursor.text().toLowerCase();
  switch (sub) {
    case 'setname':
      conn.name = cursor.text();
      cursor.finish();
      return OK;
    case 'getname':
      return conn.name === '' ? NIL : bulk(Buffer.from(conn.name));
    case 'id':
      return int(conn.id);
    case 'setinfo':
      return OK;
    case 'no-evict': {
      // A link that reads everything it is sent (kv-proxy's connections to its servers): when
      // its replies pile up, the server stops reading its requests for a while instead of
      // cutting it off at --max-output.
      if (!conn.authenticated) return error('NOAUTH Authentication required.');
      const mode = cursor.text().toLowerCase();
      cursor.finish();
      if (mode !== 'on' && mode !== 'off') return error('ERR CLIENT NO-EVICT takes on or off');
      conn.noEvict = mode === 'on';
      return OK;
    }
    default:
      return error(`ERR CLIENT ${sub.toUpperCase()} is not supported`);
  }
}

export function selectReply(args: Buffer[]): Reply {
  return args[1]!.toString('latin1') === '0' ? OK : error('ERR DB index is out of range (only database 0 exists)');
}

export function helpReply(args: Buffer[], side: Side): Reply {
  const specs = allCommands().filter((s) => servesOn(s, side) && !hasFlag(s, 'internal'));
  const name = args[1]?.toString('latin1');
  if (name !== undefined) {
    const spec = lookupCommand(name);
    if (spec === undefined || !servesOn(spec, side)) return error(`ERR unknown command '${name}'`);
    return bulk(Buffer.from(`${spec.usage}\n  ${spec.summary}\n`));
  }
  const width = Math.max(...specs.map((s) => s.usage.length));
  return bulk(Buffer.from(specs.map((s) => `${s.usage.padEnd(width)}  ${s.summary}`).join('\n') + '\n'));
}

/** INFO as sections of `key: value` fields, in the order they are printed. */
export type InfoSections = Record<string, Record<string, string | number>>;

/** What a process tells about itself in INFO. */
export interface ProcessInfo {
  role: 'kv-server' | 'kv-proxy';
  version: string;
  port: number;
  startedAt: number;
  connectedClients: number;
  maxClients: number;
  /** How client sockets are read (ClientListener.readMode). */
  clientReads: string;
}

/** The INFO sections every kvstore process has, kv-server and kv-proxy alike: Server, Clients, Memory. */
export function processInfo(p: ProcessInfo): InfoSections {
  const mem = process.memoryUsage();
  return {
    Server: {
      kvstore_version: p.version,
      redis_version: '7.0.0-compatible',
      role: p.role,
      process_id: process.pid,
      tcp_port: p.port,
      uptime_in_seconds: Math.floor((Date.now() - p.startedAt) / 1000),
      node_version: process.version,
    },
    Clients: { connected_clients: p.connectedClients, maxclients: p.maxClients, client_reads: p.clientReads },
    Memory: { used_memory: mem.heapUsed + mem.external, used_memory_rss: mem.rss },
  };
}

/** Render INFO sections (`# Name` then `key:value` lines) as Redis does. */
export function renderInfo(sections: InfoSections, only?: string): string {
  const wanted = only?.toLowerCase();
  const out: string[] = [];
  for (const [name, fields] of Object.entries(sections)) {
    if (wanted !== undefined && wanted !== 'all' && wanted !== 'everything' && wanted !== 'default' && wanted !== name.toLowerCase()) continue;
    if (out.length > 0) out.push('');
    out.push(`# ${name}`);
    for (const [k, v] of Object.entries(fields)) out.push(`${k}:${v}`);
  }
  return out.join('\r\n') + '\r\n';
}
