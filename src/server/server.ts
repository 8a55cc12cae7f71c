// kv-server: accept loop, WAL replay at boot, durability gate for replies, phased shutdown.
import path from 'node:path';
import fs from 'node:fs';
import { makeDirectory } from '../common/durable-file.js';
import { ShardedStore } from './store.js';
import { DurableStore } from './durable-store.js';
import { Prefaulter } from './prefault.js';
import { DEFAULT_PREALLOCATE, estimateLog, WriteAheadLog, type FsyncPolicy, type ReplayStats } from './wal.js';
import { RangeDumps } from './range-dump.js';
import { RangePushes } from './range-push.js';
import { SERVER_COMMANDS } from './commands.js';
import { Compactor, DEFAULT_COMPACTION, type CompactionPolicy } from './compaction.js';
import { MemoryTrim } from './memory-trim.js';
import { DEFAULT_WARMUP_KEYS, WarmUp } from './warm-up.js';
import type { ClientConnection, Executor, OutputGate } from '../common/net/client-connection.js';
import { ClientListener } from '../common/net/client-listener.js';
import { processInfo, servesOn, renderInfo } from '../common/commands/introspection.js';
import { DEFAULT_LIMITS, type Limits } from '../common/limits.js';
import { PasswordCheck } from '../common/auth.js';
import { silentLogger, type Logger } from '../common/logger.js';
import { VERSION } from '../common/version.js';
import type { CommandSpec } from '../common/commands/table.js';
import { error } from '../common/protocol/reply.js';

/** The most keys a replay sizes the indexes for up front (about 128 MB of index at most). */
const MAX_PRESIZED_KEYS = 8_000_000;

export interface ServerOptions {
  /** 0 picks a free port; the WAL is then named after the port actually bound. */
  port: number;
  host?: string;
  /** Data directory for wal_<port>.log (default: current directory). */
  dir?: string;
  shards?: number;
  password?: string | undefined;
  fsync?: FsyncPolicy;
  limits?: Limits;
  maxClients?: number;
  /** Close client connections idle this long; 0 (default) never does. */
  idleTimeoutMs?: number;
  /** Disconnect a client whose unread replies exceed this many bytes (default 64 MiB). */
  maxOutputBytes?: number;
  compaction?: CompactionPolicy;
  /** See OpenOptions.syncWrites (default true; tests set false to intercept fdatasync). */
  walSyncWrites?: boolean;
  /** Bytes of zeros written ahead of the WAL at a time (0: none); default 256 KiB. */
  walPreallocate?: number;
  /** Scratch keys an empty server imports once it is idle, to warm up (0: none; see warm-up.ts). */
  warmupKeys?: number;
  logger?: Logger;
}

export interface ServerHandle {
  readonly port: number;
  readonly host: string;
  readonly walFile: string;
  readonly replay: ReplayStats;
  readonly state: ServerState;
  close(): Promise<void>;
}

export const DEFAULT_MAX_CLIENTS = 10_000;

/** Everything a command handler may touch. */
export class ServerState implements OutputGate {
  readonly version = VERSION;
  readonly dumps: RangeDumps;
  readonly pushes: RangePushes;
  readonly startedAt = Date.now();
  private readonly waiting = new Set<ClientConnection>();
  /** whenSettled() callers, waiting for their epoch. */
  private epochWaiters: { epoch: number; resolve: (failure: string | undefined) => void }[] = [];
  replay: ReplayStats | undefined;
  compactor!: Compactor;
  warmUp: WarmUp | undefined;

  constructor(
    readonly data: DurableStore,
    readonly log: Logger,
    readonly listener: ClientListener,
    readonly options: Required<Pick<ServerOptions, 'port' | 'host' | 'dir' | 'fsync' | 'maxClients'>>,
    password: string | undefined,
  ) {
    this.dumps = new RangeDumps(data.store);
    // A push connects to the other servers of the cluster with this server's own password.
    this.pushes = new RangePushes({ dumps: this.dumps, whenSettled: (epoch) => this.whenSettled(epoch), backend: { password, logger: log } });
  }

  /** Resolves once WAL groups up to `epoch` are durable: undefined, or why they failed. */
  whenSettled(epoch: number): Promise<string | undefined> {
    if (epoch <= this.data.wal.settledEpoch) return Promise.resolve(undefined);
    return new Promise((resolve) => this.epochWaiters.push({ epoch, resolve }));
  }

  settledEpoch(): number {
    return this.data.wal.settledEpoch;
  }

  watch(conn: ClientConnection): void {
    this.waiting.add(conn);
  }

  /** WAL callback: groups up to `epoch` are durable, or failed with `failure`. */
  settle(epoch: number, failure?: string): void {
    if (this.epochWaiters.length > 0) {
      const due = this.epochWaiters.filter((w) => w.epoch <= epoch);
      this.epochWaiters = this.epochWaiters.filter((w) => w.epoch > epoch);
      for (const w of due) w.resolve(failure);
    }
    const list = [...this.waiting];
    this.waiting.clear();
    for (const conn of list) {
      conn.settle(epoch, failure);
      if (conn.waitingEpoch > 0 && !conn.isClosed) this.waiting.add(conn);
    }
  }

  configSettings(): Record<string, string> {
    return {
      appendonly: 'yes',
      appendfsync: this.options.fsync,
      save: '',
      port: String(this.options.port),
      bind: this.options.host,
      dir: this.options.dir,
      maxclients: String(this.options.maxClients),
      databases: '1',
    };
  }

  info(section?: string): string {
    const wal = this.data.wal;
    return renderInfo(
      {
        ...processInfo({
          role: 'kv-server',
          version: this.version,
          port: this.options.port,
          startedAt: this.startedAt,
          connectedClients: this.listener.clients.size,
          maxClients: this.options.maxClients,
          clientReads: this.listener.readMode,
        }),
        Persistence: {
          loading: 0,
          aof_enabled: 1,
          wal_file: wal.file,
          wal_size_bytes: wal.size,
          wal_preallocated_bytes: wal.preallocatedBytes,
          fsync_policy: wal.policy,
          wal_fsyncs: wal.fsyncs,
          wal_last_fsync_unix_ms: wal.lastFsyncAt,
          wal_last_error: wal.lastError ?? 'none',
          wal_live_bytes: this.compactor.liveLogBytes(),
          wal_rewrite_in_progress: this.compactor.inProgress ? 1 : 0,
          wal_rewrites: wal.rewrites,
          wal_last_rewrite_ms: wal.lastRewriteMs,
          replay_records: this.replay?.records ?? 0,
          replay_ms: Math.round(this.replay?.millis ?? 0),
          tombstones: this.data.store.tombstoneCount,
        },
        Stats: {
          total_connections_received: this.listener.totalConnections,
          total_commands_processed: this.listener.totalCommands,
          instantaneous_ops_per_sec: this.listener.opsPerSec,
          migration_dumps_active: this.dumps.active,
          migration_pushes_active: this.pushes.active,
          warmup_state: this.warmUp?.state ?? 'off',
          warmup_ms: this.warmUp?.millis ?? 0,
        },
        Keyspace: { db0: `keys=${this.data.store.size},expires=0,avg_ttl=0` },
      },
      section,
    );
  }
}

class ServerExecutor implements Executor {
  constructor(private readonly state: ServerState) {}

  serves(spec: CommandSpec): boolean {
    return servesOn(spec, 'server');
  }

  execute(conn: ClientConnection, spec: CommandSpec, args: Buffer[], slot: number) {
    const handler = SERVER_COMMANDS[spec.name as keyof typeof SERVER_COMMANDS];
    if (handler === undefined) return error(`ERR unknown command '${spec.name}'`);
    const data = this.state.data;
    data.touched = 0;
    const reply = handler(this.state, args, conn, slot);
    if (data.touched > 0) conn.dependsOn(data.touched);
    return reply;
  }
}

export async function startServer(options: ServerOptions): Promise<ServerHandle> {
  const host = options.host ?? '127.0.0.1';
  const dir = path.resolve(options.dir ?? '.');
  const log = options.logger ?? silentLogger();
  const limits = options.limits ?? DEFAULT_LIMITS;
  const maxClients = options.maxClients ?? DEFAULT_MAX_CLIENTS;
  const password = options.password ? new PasswordCheck(options.password) : undefined;
  makeDirectory(dir);

  // Bind first: the port doubles as a lock on wal_<port>.log, so two servers started on the same
  // port cannot both append to one log. Connections wait until the replay is done.
  const listener = await ClientListener.bind(host, options.port);
  const port = listener.port;
  const walFile = path.join(dir, `wal_${port}.log`);

  const data = new DurableStore(new ShardedStore(options.shards ?? 16));
  const state = new ServerState(data, log, listener, { port, host, dir, fsync: options.fsync ?? 'always', maxClients }, options.password);
  let opened;
  const prefault = new Prefaulter();
  try {
    // The log's size bounds what the replay will hold: size the arenas and the indexes once
    // (the record count estimated from the log's first MiB), trim afterwards.
    if (fs.existsSync(walFile)) {
      const estimate = estimateLog(walFile);
      data.store.reserve(estimate.bytes, prefault.allocate);
      // Capped: a misleading first MiB must not make a huge index; beyond this it grows as usual.
      data.store.expectEntries(Math.min(estimate.records, MAX_PRESIZED_KEYS));
    }
    void prefault.start();
    opened = WriteAheadLog.open(walFile, {
      fsync: options.fsync ?? 'always',
      syncWrites: options.walSyncWrites ?? true,
      preallocate: options.walPreallocate ?? DEFAULT_PREALLOCATE,
      apply: (type, key, value) => data.replay(type, key, value),
      onTruncated: (stats) =>
        log.warn(
          { file: walFile, truncatedAt: stats.truncatedFrom, droppedBytes: stats.droppedBytes, droppedRecords: stats.droppedRecords, keptRecords: stats.records },
          'WAL had a torn or garbage tail (an interrupted append); cut back to the last complete group',
        ),
      events: {
        durable: (epoch) => {
          data.settled(epoch);
          state.settle(epoch);
          state.compactor.maybeStart();
        },
        failed: (epoch, err) => {
          const undone = data.rollBack(epoch);
          log.error({ err, file: walFile, undone }, 'WAL write failed; pending writes were rolled back and answered with ERR');
          state.settle(epoch, `ERR disk write failed (${(err as NodeJS.ErrnoException).code ?? 'EIO'}); the write was not applied`);
        },
      },
    });
  } catch (err) {
    await listener.stop();
    throw err;
  } finally {
    prefault.close();
  }
  data.wal = opened.wal;
  data.store.trim();
  state.replay = opened.stats;
  state.compactor = new Compactor(opened.wal, data.store, options.compaction ?? DEFAULT_COMPACTION, log);
  // A rewrite interrupted by a crash leaves its temp file behind; the log itself is intact.
  fs.rmSync(`${walFile}.rewrite`, { force: true });
  log.info({ file: walFile, records: opened.stats.records, keys: data.store.size, ms: Math.round(opened.stats.millis) }, 'WAL replayed');

  // Give back what bulk loads leave spare once they settle; the replay is the first of them.
  const memoryTrim = new MemoryTrim(data.store, () => listener.totalCommands);
  if (opened.stats.records > 0) memoryTrim.expectSettling();

  const executor = new ServerExecutor(state);
  listener.accept(maxClients, {
    limits,
    executor,
    password,
    idleTimeoutMs: options.idleTimeoutMs,
    maxOutputBytes: options.maxOutputBytes,
    gate: state,
  });

  // An empty node is about to be ADDed: warm its import path up while it waits (warm-up.ts).
  const warmUp = new WarmUp({
    keys: options.warmupKeys ?? DEFAULT_WARMUP_KEYS,
    dir: path.join(dir, `warmup_${port}.tmp`),
    // The default shard count whatever --shards says: the code is the same, and 4096 scratch
    // arenas would leave ~75 MB with glibc for nothing.
    startScratch: (scratchDir, scratchPassword) =>
      startServer({ port: 0, host: '127.0.0.1', dir: scratchDir, password: scratchPassword, fsync: options.fsync, maxClients: 4, walPreallocate: options.walPreallocate, warmupKeys: 0 }),
    commands: () => listener.totalCommands,
    isEmpty: () => data.store.size === 0 && data.store.tombstoneCount === 0,
    log,
    // The JIT's work stays; the heap the scratch instance grew is given back like a bulk load's.
    onEnd: () => memoryTrim.expectSettling(),
  });
  state.warmUp = warmUp;

  let closing: Promise<void> | undefined;
  return {
    port,
    host,
    walFile,
    replay: opened.stats,
    state,
    close() {
      closing ??= (async () => {
        // Phase 1: stop accepting. Phase 2: let pending groups reach the disk so every
        // reply already promised goes out. Phase 3: close clients and the log.
        memoryTrim.stop();
        const stopped = listener.stop();
        await warmUp.close();
        await state.pushes.close();
        await data.wal.drain();
        listener.closeClients();
        await data.wal.close();
        await stopped;
      })();
      return closing;
    },
  };
}
