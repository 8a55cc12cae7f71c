// kv-proxy: the only thing clients talk to. Accepts text and RESP clients, routes data
// commands through the Router, and runs ADD/REMOVE through Membership.
import path from 'node:path';
import { HashRing, DEFAULT_VNODES } from '../common/ring.js';
import { LATER, LATER_EXCLUSIVE, type Answer, type ClientConnection, type Executor } from '../common/net/client-connection.js';
import { ClientListener } from '../common/net/client-listener.js';
import { clientReply, commandReply, configReply, helpReply, processInfo, renderInfo, selectReply, servesOn } from '../common/commands/introspection.js';
import type { CommandSpec } from '../common/commands/table.js';
import { bulk, error, PONG, type Reply } from '../common/protocol/reply.js';
import { DEFAULT_LIMITS, type Limits } from '../common/limits.js';
import { PasswordCheck } from '../common/auth.js';
import { silentLogger, type Logger } from '../common/logger.js';
import { VERSION } from '../common/version.js';
import { BackendPool, type Backend } from '../common/net/backend.js';
import { Router } from './router.js';
import { Membership } from './membership.js';
import { StateFile, emptyState } from './ring-state.js';
import { makeDirectory } from '../common/durable-file.js';

export interface ProxyOptions {
  port: number;
  host?: string;
  /** Directory for the ring state file ring_<port>.json (default: current directory). */
  dir?: string;
  vnodes?: number;
  password?: string | undefined;
  /** Password the proxy uses with the servers (default: `password`). */
  nodePassword?: string | undefined;
  limits?: Limits;
  maxClients?: number;
  /** Close client connections idle this long; 0 (default) never does. */
  idleTimeoutMs?: number;
  /** Disconnect a client whose unread replies exceed this many bytes (default 64 MiB). */
  maxOutputBytes?: number;
  connectTimeoutMs?: number;
  requestTimeoutMs?: number;
  /** Keys per IMPORT batch when moving data (default DEFAULT_BATCH_KEYS). */
  migrateBatchKeys?: number;
  /** Most keys moved per second during ADD/REMOVE (default DEFAULT_MIGRATE_RATE); 0 means no limit. */
  migrateRate?: number;
  logger?: Logger;
}

export interface ProxyHandle {
  readonly port: number;
  readonly host: string;
  readonly stateFile: string;
  readonly membership: Membership;
  /** Resolves when a move interrupted by a previous crash has been resumed (or there was none). */
  readonly recovered: Promise<void>;
  close(): Promise<void>;
}

class ProxyExecutor implements Executor {
  readonly startedAt = Date.now();

  constructor(
    private readonly router: Router,
    private readonly membership: Membership,
    private readonly pool: BackendPool,
    private readonly listener: ClientListener,
    private readonly settings: { port: number; host: string; maxClients: number },
  ) {}

  serves(spec: CommandSpec): boolean {
    return servesOn(spec, 'proxy');
  }

  execute(conn: ClientConnection, spec: CommandSpec, args: Buffer[], slot: number): Answer {
    if (spec.route !== 'local') return this.router.execute(conn, spec, args, slot);
    switch (spec.name) {
      case 'ping':
        return args.length > 2 ? error("ERR wrong number of arguments for 'ping' command") : args.length > 1 ? bulk(args[1]!) : PONG;
      case 'echo':
        return bulk(args[1]!);
      case 'command':
        return commandReply(args, 'proxy');
      case 'config':
        return configReply(args, { port: String(this.settings.port), bind: this.settings.host, maxclients: String(this.settings.maxClients), appendonly: 'yes', save: '', databases: '1' });
      case 'select':
        return selectReply(args);
      case 'client':
        return clientReply(args, conn);
      case 'help':
        return helpReply(args, 'proxy');
      case 'add':
        return this.later(conn, slot, this.membership.add(args[1]!.toString('utf8')), LATER_EXCLUSIVE);
      case 'remove':
        return this.later(conn, slot, this.membership.remove(args[1]!.toString('utf8')), LATER_EXCLUSIVE);
      case 'nodes':
        return this.later(conn, slot, this.nodes());
      case 'info':
        return this.later(conn, slot, this.info(args[1]?.toString('latin1')));
      case 'migration':
        return bulk(Buffer.from(renderInfo({ Migration: this.migrationFields() })));
      default:
        return error(`ERR unknown command '${spec.name}'`);
    }
  }

  private later(conn: ClientConnection, slot: number, work: Promise<Reply>, kind: typeof LATER | typeof LATER_EXCLUSIVE = LATER): Answer {
    work.then(
      (reply) => conn.complete(slot, reply),
      (err: unknown) => conn.complete(slot, error(`ERR ${(err as Error).message}`)),
    );
    return kind;
  }

  private async nodeKeys(): Promise<Map<Backend, number | string>> {
    const nodes = this.router.allNodes();
    const replies = await Promise.all(nodes.map((n) => n.call(['DBSIZE'])));
    return new Map(nodes.map((n, i) => [n, replies[i]!.type === 'int' ? replies[i].value : 'unknown']));
  }

  private async nodes(): Promise<Reply> {
    const keys = await this.nodeKeys();
    const shares = this.router.current.shares();
    const nextShares = this.router.moving?.shares();
    const lines = [...keys].map(([node, count]) => {
      const share = shares.get(node.address);
      const role = share === undefined ? ' (joining)' : nextShares !== undefined && !nextShares.has(node.address) ? ' (leaving)' : '';
      return `${node.address} ${node.health === 'idle' ? 'up' : node.health} keys=${count} share=${((share ?? 0) * 100).toFixed(2)}%${role}`;
    });
    return bulk(Buffer.from(lines.join('\n') + (lines.length > 0 ? '\n' : '')));
  }

  migrationFields(): Record<string, string | number> {
    const p = this.membership.progress;
    const pending = this.membership.pendingMove;
    const seconds = ((p.finishedAt || Date.now()) - p.startedAt) / 1000;
    return {
      migration_state: pending !== null && p.state !== 'running' ? 'interrupted' : p.state,
      migration_kind: pending?.kind ?? p.kind,
      migration_node: pending?.node ?? p.node,
      migration_sources: p.sources.join(','),
      migration_targets: p.targets.join(','),
      migration_keys_moved: p.keysMoved,
      migration_keys_scanned: p.keysScanned,
      migration_keys_total: p.keysToScan,
      migration_keys_per_sec: p.startedAt > 0 && seconds > 0 ? Math.round(p.keysMoved / seconds) : 0,
      migration_rate_limit: this.membership.maxKeysPerSec,
      migration_elapsed_ms: p.startedAt > 0 ? Math.round(seconds * 1000) : 0,
      migration_error: p.error || 'none',
    };
  }

  private async info(section?: string): Promise<Reply> {
    const keys = await this.nodeKeys();
    const shares = this.router.current.shares();
    const cluster: Record<string, string | number> = { nodes: this.router.current.size, vnodes_per_node: this.membership.vnodes };
    let total = 0;
    let i = 0;
    for (const [node, count] of keys) {
      if (typeof count === 'number') total += count;
      cluster[`node${i++}`] = `${node.address},health=${node.health === 'idle' ? 'up' : node.health},keys=${count},share=${((shares.get(node.address) ?? 0) * 100).toFixed(2)}`;
    }
    const text = renderInfo(
      {
        ...processInfo({
          role: 'kv-proxy',
          version: VERSION,
          port: this.settings.port,
          startedAt: this.startedAt,
          connectedClients: this.listener.clients.size,
          maxClients: this.settings.maxClients,
          clientReads: this.listener.readMode,
        }),
        Persistence: { loading: 0 },
        Stats: {
          total_connections_received: this.listener.totalConnections,
          total_commands_processed: this.listener.totalCommands,
          instantaneous_ops_per_sec: this.listener.opsPerSec,
          backend_requests: this.pool.all().reduce((n, b) => n + b.requests, 0),
        },
        Cluster: cluster,
        Migration: this.migrationFields(),
        Keyspace: { db0: `keys=${total},expires=0,avg_ttl=0` },
      },
      section,
    );
    return bulk(Buffer.from(text));
  }
}

export async function startProxy(options: ProxyOptions): Promise<ProxyHandle> {
  const host = options.host ?? '127.0.0.1';
  const log = options.logger ?? silentLogger();
  const limits = options.limits ?? DEFAULT_LIMITS;
  const maxClients = options.maxClients ?? 10_000;
  const password = options.password ? new PasswordCheck(options.password) : undefined;
  const pool = new BackendPool({
    password: options.nodePassword ?? options.password,
    connectTimeoutMs: options.connectTimeoutMs ?? 1000,
    requestTimeoutMs: options.requestTimeoutMs ?? 2000,
    logger: log,
  });

  const listener = await ClientListener.bind(host, options.port);
  const port = listener.port;
  const file = StateFile.forPort(path.resolve(options.dir ?? '.'), port);
  let state;
  try {
    // Fail now, not at the first ADD, if the state file's directory cannot be made.
    makeDirectory(path.dirname(file.file));
    state = file.load();
  } catch (err) {
    await listener.stop();
    throw err;
  }
  if (state === undefined) {
    state = emptyState(options.vnodes ?? DEFAULT_VNODES);
  } else if (options.vnodes !== undefined && options.vnodes !== state.vnodes) {
    log.warn({ saved: state.vnodes, requested: options.vnodes }, 'ignoring --vnodes: the saved ring uses a different count, and changing it would move most keys');
  }
  if (state.members.length > 0) log.info({ members: state.members, file: file.file }, 'ring loaded from state file');

  const router = new Router(pool, new HashRing(state.members, state.vnodes));
  // Writes to the moving keys before this start are unknown: every moving key counts as written.
  if (state.move !== null) router.beginMove(new HashRing(state.move.to, state.vnodes), false);
  const membership = new Membership(state, file, router, pool, log, options.migrateBatchKeys, options.migrateRate);
  const executor = new ProxyExecutor(router, membership, pool, listener, { port, host, maxClients });

  listener.accept(maxClients, {
    limits,
    executor,
    password,
    idleTimeoutMs: options.idleTimeoutMs,
    maxOutputBytes: options.maxOutputBytes,
  });

  const recovered = membership.recover().catch((err: unknown) => log.error({ err }, 'recovery failed'));

  let closing: Promise<void> | undefined;
  return {
    port,
    host,
    stateFile: file.file,
    membership,
    recovered,
    close() {
      closing ??= (async () => {
        const stopped = listener.stop();
        listener.closeClients();
        pool.close();
        await stopped;
      })();
      return closing;
    },
  };
}
