// Warming a fresh kv-server up before its first move.
//
// A node joins a cluster empty, through ADD, and the first thing it does is take a move's
// IMPORTs (~100k keys/s) while it starts to serve its share of the client traffic. In a process
// that has never run that code, V8 still has to compile it and the heap still has to grow, on
// the same two cores the clients need. Measured with no client load (ADD of ~250k keys into a
// fresh node, then REMOVE and ADD of the same node again): the target used 780-1,010 ms of CPU
// and took ~18k page faults the first time, 540-820 ms and 6-10k the second. Under load
// (`npm run bench:rebalance`, six alternating pairs), a first ADD into a node that had warmed up
// as below kept 54-68% of the clients' throughput (median 56.5%) and cost that node 680-760 ms
// of CPU, against 43-59% (median 51%) and 860-1,030 ms without (docs/rebalancing.md).
//
// So a server that starts empty and then sits idle for a second does that warm-up itself: it
// starts a scratch instance of itself in the same process (loopback, a free port, a random
// password, its WAL in warmup_<port>.tmp/ next to the real one), imports `keys` keys into it
// over a socket the way a source does (400-key IMPORTs, two in flight), then SETs and GETs a
// fifth of them the way clients do, closes it and deletes its directory. The scratch instance
// runs the same functions in the same process, so what V8 compiled serves the real server
// afterwards. The heap it grew is given back as after a bulk load (server.ts: MemoryTrim):
// keeping it gained nothing measurable under load (four alternating runs: 50-68% of the load
// kept with it given back, 56-62% with it kept) and left an idle empty server at 99 MB of RSS
// instead of 69 MB.
// Nothing touches the real store or its WAL.
// Any real traffic (more than a few commands) stops it at the next request; a directory left
// by a crash during a warm-up is deleted at the next start. It needs ~20 MB of disk for a
// moment, so it does not run on a disk with little room left: the server's own WAL comes first.
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Backend } from '../common/net/backend.js';
import type { Reply } from '../common/protocol/reply.js';
import { silentLogger, type Logger } from '../common/logger.js';

/** Scratch keys imported by default (kv-server --warmup-keys). */
export const DEFAULT_WARMUP_KEYS = 100_000;
/** Quiet time after the start before warming up: a node that is used at once needs none. */
const IDLE_MS = 1000;
/** Keys per IMPORT, as a source sends them (proxy/migration.ts DEFAULT_BATCH_KEYS). */
const BATCH_KEYS = 400;
/** IMPORTs in flight, as a source keeps them (server/range-push.ts). */
const IMPORTS_IN_FLIGHT = 2;
/** Client requests in flight while the scratch keys are read and written. */
const CLIENT_WINDOW = 50;
/** Real commands tolerated during a warm-up before it gives way (a probe is no load). */
const REAL_COMMANDS_ALLOWED = 10;
const VALUE = 'w'.repeat(100);
/** Disk a scratch key may take, generously: its SET record, COMMITs, zeros written ahead. */
const SCRATCH_BYTES_PER_KEY = 256;
/** Free space the warm-up leaves untouched for the server itself. */
const SPARE_DISK_BYTES = 64 * 1024 * 1024;

export type WarmUpState = 'off' | 'waiting' | 'running' | 'done' | 'stopped' | 'failed' | 'skipped';

/** A scratch server to warm up against. */
export interface ScratchServer {
  readonly port: number;
  close(): Promise<void>;
}

export interface WarmUpOptions {
  /** Scratch keys to import; 0 turns the warm-up off. */
  keys: number;
  /** The scratch instance's data directory, deleted before and after. */
  dir: string;
  /** Start a scratch instance of this server (port 0, loopback) in `dir`, requiring `password`. */
  startScratch: (dir: string, password: string) => Promise<ScratchServer>;
  /** Commands the real server has served so far (only differences matter). */
  commands: () => number;
  /** Whether the real server holds no data (only an empty node warms up). */
  isEmpty: () => boolean;
  /** Free bytes on the filesystem holding `dir`'s parent (default: statfs). */
  freeBytes?: (dir: string) => number;
  log: Logger;
  /** Called once a warm-up that ran has ended (the server gives back the memory it grew). */
  onEnd?: () => void;
  idleMs?: number;
}

export class WarmUp {
  state: WarmUpState;
  /** How long the warm-up took (0 until it ends). */
  millis = 0;
  private readonly timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private closed = false;
  private commandsAtStart = 0;

  constructor(private readonly options: WarmUpOptions) {
    // A crash during an earlier warm-up leaves its scratch directory behind.
    removeScratchDir(options.dir, options.log);
    this.state = options.keys > 0 ? 'waiting' : 'off';
    if (options.keys <= 0) return;
    this.commandsAtStart = options.commands();
    this.timer = setTimeout(() => this.begin(), options.idleMs ?? IDLE_MS).unref();
  }

  /** Stop a warm-up in progress (or one not started yet) and wait until its scratch instance is gone. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    await this.running;
  }

  private begin(): void {
    if (this.closed) return;
    if (!this.options.isEmpty() || this.realTraffic()) {
      this.state = 'skipped';
      return;
    }
    const needed = this.options.keys * SCRATCH_BYTES_PER_KEY + SPARE_DISK_BYTES;
    const free = (this.options.freeBytes ?? freeDiskBytes)(path.dirname(this.options.dir));
    if (free < needed) {
      this.state = 'skipped';
      this.options.log.info({ freeBytes: free, neededBytes: needed }, 'warm-up skipped: too little free disk space');
      return;
    }
    this.state = 'running';
    this.running = this.run();
  }

  private realTraffic(): boolean {
    return this.options.commands() - this.commandsAtStart > REAL_COMMANDS_ALLOWED;
  }

  private shouldStop(): boolean {
    return this.closed || this.realTraffic();
  }

  private async run(): Promise<void> {
    const { dir, keys, log } = this.options;
    const started = performance.now();
    let scratch: ScratchServer | undefined;
    let backend: Backend | undefined;
    try {
      const password = randomBytes(16).toString('hex');
      scratch = await this.options.startScratch(dir, password);
      backend = new Backend(`127.0.0.1:${scratch.port}`, { password, logger: silentLogger(), connectTimeoutMs: 5000, requestTimeoutMs: 10_000 });
      const finished = (await importKeys(backend, keys, () => this.shouldStop())) && (await clientTraffic(backend, Math.ceil(keys / 5), () => this.shouldStop()));
      this.state = finished ? 'done' : 'stopped';
    } catch (err) {
      this.state = 'failed';
      log.warn({ err }, 'warm-up failed (no effect on the data)');
    } finally {
      backend?.close();
      await scratch?.close().catch(() => {});
      removeScratchDir(dir, log);
      this.millis = Math.round(performance.now() - started);
    }
    log.info({ keys, state: this.state, ms: this.millis }, 'warm-up of the import path');
    this.options.onEnd?.();
  }
}

function freeDiskBytes(dir: string): number {
  try {
    const s = fs.statfsSync(dir);
    return s.bavail * s.bsize;
  } catch {
    return 0; // cannot tell: do not risk it
  }
}

/** Delete a scratch directory; a failure is logged, never thrown (the warm-up is optional). */
function removeScratchDir(dir: string, log: Logger): void {
  try {
    fs.rmSync(dir, { recursive: true, force: true });
  } catch (err) {
    log.warn({ err, dir }, 'could not remove the warm-up scratch directory');
  }
}

function expectSuccess(reply: Reply): void {
  if (reply.type === 'error') throw new Error(`scratch instance answered: ${reply.message}`);
}

/** IMPORT `keys` scratch keys as a source pushes them. False if told to stop first. */
async function importKeys(backend: Backend, keys: number, stop: () => boolean): Promise<boolean> {
  let next = 0;
  const worker = async (): Promise<boolean> => {
    while (next < keys) {
      if (stop()) return false;
      const args = ['IMPORT'];
      for (const end = Math.min(keys, next + BATCH_KEYS); next < end; next++) args.push(`warmup:${next}`, VALUE);
      expectSuccess(await backend.call(args));
    }
    return true;
  };
  const done = await Promise.all(Array.from({ length: IMPORTS_IN_FLIGHT }, worker));
  return done.every(Boolean);
}

/** SET and GET `count` of the scratch keys, CLIENT_WINDOW at a time. False if told to stop first. */
async function clientTraffic(backend: Backend, count: number, stop: () => boolean): Promise<boolean> {
  for (let i = 0; i < count; i += CLIENT_WINDOW) {
    if (stop()) return false;
    const replies: Promise<Reply>[] = [];
    for (let k = i; k < Math.min(count, i + CLIENT_WINDOW); k++) {
      replies.push(backend.call(k % 2 === 0 ? ['SET', `warmup:${k}`, VALUE] : ['GET', `warmup:${k}`]));
    }
    for (const reply of await Promise.all(replies)) expectSuccess(reply);
  }
  return true;
}
