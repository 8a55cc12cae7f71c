// Extra machinery for the durability tests (fsync barrier, compaction, kill -9 torture, disk
// full). harness.ts stays the source of processes, ports, waits and cleanup; this file adds:
//  - RawSocket: a socket that keeps every byte, so a test can say "nothing came back yet";
//  - dir images: the bytes of a data directory at one instant, which is exactly what a kill -9
//    at that instant leaves behind (the page cache survives a process crash), and in-process
//    servers started on such an image;
//  - INFO persistence parsing, whole-keyspace dumps, and the WAL's record layout on disk;
//  - the torture writer and the history checker (acked / unknown per key);
//  - a small tmpfs for the disk-full test.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { HOST, TextClient, freePort, waitFor } from './harness.js';
import { Parse, RECORD_HEADER, RecordType, isAllZero, parseRecord, type ParsedRecord } from '../../src/server/wal-format.js';
import { startServer as startInProcess, type ServerHandle, type ServerOptions } from '../../src/server/server.js';
import { seededRandom } from '../support/seeded-random.js';
export { seededRandom };

// ---------------------------------------------------------------------------------------------
// Waiting

/** Poll `check` until it is true, or fail after `timeoutMs` (harness.waitFor with a boolean). */
export function waitUntil(what: string, timeoutMs: number, check: () => boolean | Promise<boolean>, intervalMs = 10): Promise<true> {
  return waitFor(what, timeoutMs, async () => ((await check()) ? true : undefined), intervalMs);
}

/**
 * The opposite wait: fail as soon as `count()` changes, succeed once `ms` have passed without a
 * change. Polls against a deadline, so a byte that arrives early fails the test early.
 */
export async function expectUnchangedFor(what: string, ms: number, count: () => number, intervalMs = 5): Promise<void> {
  const start = count();
  const deadline = Date.now() + ms;
  for (;;) {
    const now = count();
    if (now !== start) throw new Error(`${what}: changed from ${start} to ${now} within ${ms} ms`);
    if (Date.now() >= deadline) return;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

// ---------------------------------------------------------------------------------------------
// A raw socket that keeps every byte

const rawSockets = new Set<RawSocket>();

/** Destroy every RawSocket still open (call from afterEach). */
export function closeRawSockets(): void {
  for (const s of rawSockets) s.destroy();
  rawSockets.clear();
}

/**
 * Bytes in, bytes recorded: no parsing, so "no reply byte arrived" can be asserted literally.
 * `expectNext` consumes from a read cursor; `expectSilence` says nothing arrived past it.
 */
export class RawSocket {
  private data = Buffer.alloc(0);
  private cursor = 0;
  closed = false;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => (this.data = Buffer.concat([this.data, chunk])));
    socket.on('error', () => {});
    socket.on('close', () => (this.closed = true));
  }

  static connect(port: number): Promise<RawSocket> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ port, host: HOST, noDelay: true });
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        const raw = new RawSocket(socket);
        rawSockets.add(raw);
        resolve(raw);
      });
    });
  }

  /** Every byte received so far. */
  get received(): number {
    return this.data.length;
  }

  /** Bytes received past the read cursor, as latin1 text. */
  get unread(): string {
    return this.data.toString('latin1', this.cursor);
  }

  write(text: string): void {
    this.socket.write(text);
  }

  /** Wait for `expected` to arrive next (exactly those bytes), then consume it. */
  async expectNext(expected: string, timeoutMs = 10_000): Promise<void> {
    await waitUntil(`${JSON.stringify(expected)} on the socket (have ${JSON.stringify(this.unread)})`, timeoutMs, () => this.data.length - this.cursor >= expected.length || this.closed, 2);
    const got = this.data.toString('latin1', this.cursor, this.cursor + expected.length);
    if (got !== expected) throw new Error(`expected ${JSON.stringify(expected)} next, got ${JSON.stringify(this.unread)}${this.closed ? ' (closed)' : ''}`);
    this.cursor += expected.length;
  }

  /** Fail if any byte arrives past the read cursor within `ms`. */
  async expectSilence(what: string, ms: number): Promise<void> {
    const unread = (): number => this.data.length - this.cursor;
    if (unread() > 0) throw new Error(`${what}: already received ${JSON.stringify(this.unread)}`);
    await expectUnchangedFor(`${what} (received ${JSON.stringify(this.unread)})`, ms, unread);
  }

  destroy(): void {
    this.socket.destroy();
    rawSockets.delete(this);
  }
}

// ---------------------------------------------------------------------------------------------
// INFO, dumps

/** `INFO persistence` as field -> value. */
export async function persistenceInfo(client: TextClient): Promise<Map<string, string>> {
  const text = await client.send('INFO persistence');
  const fields = new Map<string, string>();
  for (const line of text.split('\n')) {
    const i = line.indexOf(':');
    if (i > 0 && !line.startsWith('#')) fields.set(line.slice(0, i), line.slice(i + 1));
  }
  if (!fields.has('wal_rewrite_in_progress')) throw new Error(`INFO persistence has no wal_rewrite_in_progress: ${JSON.stringify(text)}`);
  return fields;
}

/** Numeric INFO persistence field. */
export async function persistenceNumber(client: TextClient, field: string): Promise<number> {
  const value = (await persistenceInfo(client)).get(field);
  if (value === undefined || !/^\d+$/.test(value)) throw new Error(`INFO persistence ${field} is ${JSON.stringify(value)}`);
  return Number(value);
}

/** Poll INFO persistence until no rewrite is running (wal_rewrite_in_progress:0). */
export async function waitForRewriteIdle(client: TextClient, timeoutMs = 30_000): Promise<void> {
  await waitUntil('wal_rewrite_in_progress:0', timeoutMs, async () => (await persistenceInfo(client)).get('wal_rewrite_in_progress') === '0', 20);
}

/** A key's state as a text-protocol GET sees it: the value, or undefined for NOT_FOUND. */
export type Dump = Map<string, string | undefined>;

/** GET every key in pipelines of `batch`; throws on any reply that is neither VALUE nor NOT_FOUND. */
export async function dumpKeys(client: TextClient, keys: readonly string[], batch = 2000): Promise<Dump> {
  const out: Dump = new Map();
  for (let i = 0; i < keys.length; i += batch) {
    const part = keys.slice(i, i + batch);
    const replies = await client.pipeline(part.map((k) => `GET ${k}`), 60_000);
    replies.forEach((r, j) => {
      if (r === 'NOT_FOUND') out.set(part[j]!, undefined);
      else if (r.startsWith('VALUE ')) out.set(part[j]!, r.slice(6));
      else throw new Error(`GET ${part[j]} replied ${JSON.stringify(r)}`);
    });
  }
  return out;
}

/** Keys whose state differs between two dumps, described (at most `limit`). */
export function dumpDiff(expected: ReadonlyMap<string, string | undefined>, actual: ReadonlyMap<string, string | undefined>, limit = 10): string[] {
  const diffs: string[] = [];
  const show = (v: string | undefined): string => (v === undefined ? 'absent' : JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}...` : v));
  for (const key of new Set([...expected.keys(), ...actual.keys()])) {
    if (expected.get(key) !== actual.get(key)) diffs.push(`${key}: expected ${show(expected.get(key))}, got ${show(actual.get(key))}`);
  }
  return diffs.length > limit ? [...diffs.slice(0, limit), `... ${diffs.length - limit} more`] : diffs;
}

/** Number of keys a model holds (undefined values are deleted keys). */
export function liveCount(model: ReadonlyMap<string, string | undefined>): number {
  let n = 0;
  for (const v of model.values()) if (v !== undefined) n++;
  return n;
}

// ---------------------------------------------------------------------------------------------
// The WAL on disk

export interface WalRecordAt {
  offset: number;
  size: number;
  type: RecordType;
  key: string;
  value: string;
}

/** Every record of a well-formed log, with its byte offset (COMMIT records included). */
export function walRecords(file: string): WalRecordAt[] {
  const buf = fs.readFileSync(file);
  const out: WalRecordAt[] = [];
  const rec: ParsedRecord = { type: RecordType.Commit, keyStart: 0, keyLen: 0, valueStart: 0, valueLen: 0, size: 0 };
  let at = 8; // MAGIC
  while (at < buf.length) {
    // The zeros written ahead of the log.
    if (isAllZero(buf, at, Math.min(buf.length, at + RECORD_HEADER)) && isAllZero(buf, at, buf.length)) break;
    const status = parseRecord(buf, at, buf.length, rec);
    if (status !== Parse.Ok) throw new Error(`${file}: no valid record at offset ${at} (${Parse[status]})`);
    out.push({
      offset: at,
      size: rec.size,
      type: rec.type,
      key: buf.toString('latin1', rec.keyStart, rec.keyStart + rec.keyLen),
      value: buf.toString('latin1', rec.valueStart, rec.valueStart + rec.valueLen),
    });
    at += rec.size;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Directory images and in-process servers

/** The bytes of every file in `dir` right now: what a kill -9 at this instant leaves. */
export type DirImage = Map<string, Buffer>;

export function imageOf(dir: string): DirImage {
  const image: DirImage = new Map();
  for (const name of fs.readdirSync(dir)) {
    const full = path.join(dir, name);
    if (fs.statSync(full).isFile()) image.set(name, fs.readFileSync(full));
  }
  return image;
}

const inProcessDirs = new Set<string>();
const inProcessServers = new Set<ServerHandle>();

/** A fresh directory for an in-process server, removed by closeInProcess(). */
export function inProcessDir(label: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `kvstore-durability-${label}-`));
  inProcessDirs.add(dir);
  return dir;
}

/** startServer from src/server/server.ts, remembered so closeInProcess() closes it. */
export async function startInProcessServer(options: ServerOptions): Promise<ServerHandle> {
  const handle = await startInProcess(options);
  inProcessServers.add(handle);
  return handle;
}

export async function closeInProcessServer(handle: ServerHandle): Promise<void> {
  inProcessServers.delete(handle);
  await handle.close();
}

/** Close every in-process server still open and remove their directories. */
export async function closeInProcess(): Promise<void> {
  for (const h of [...inProcessServers]) await closeInProcessServer(h);
  for (const d of inProcessDirs) fs.rmSync(d, { recursive: true, force: true });
  inProcessDirs.clear();
}

/**
 * Start an in-process server on a copy of `image`. The WAL is named after the port, so the
 * image's `wal_<port>.log*` files are renamed to a fresh free port (retried if another test
 * takes that port first). This is the "restart after kill -9" of an in-process test.
 */
export async function startOnImage(image: DirImage, port: number, options: Omit<ServerOptions, 'port' | 'dir'> = {}): Promise<{ handle: ServerHandle; dir: string; hadRewriteFile: boolean }> {
  const prefix = `wal_${port}.log`;
  for (let attempt = 1; ; attempt++) {
    const fresh = await freePort();
    const dir = inProcessDir('image');
    let hadRewriteFile = false;
    for (const [name, bytes] of image) {
      const renamed = name.startsWith(prefix) ? `wal_${fresh}.log${name.slice(prefix.length)}` : name;
      if (renamed.endsWith('.rewrite')) hadRewriteFile = true;
      fs.writeFileSync(path.join(dir, renamed), bytes);
    }
    try {
      return { handle: await startInProcessServer({ ...options, port: fresh, dir }), dir, hadRewriteFile };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt >= 10) throw err;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Torture: writers that know which of their operations were acknowledged

export type OpStatus = 'pending' | 'acked' | 'unknown' | 'failed';

export interface KeyOp {
  kind: 'set' | 'del';
  /** The value a SET wrote (unique per operation). */
  value: string;
  status: OpStatus;
}

/** Operations per key in the order they were sent (one writer per key, so one order). */
export class History {
  readonly ops = new Map<string, KeyOp[]>();

  add(key: string, op: KeyOp): void {
    let list = this.ops.get(key);
    if (list === undefined) this.ops.set(key, (list = []));
    list.push(op);
  }

  count(status: OpStatus): number {
    let n = 0;
    for (const list of this.ops.values()) for (const op of list) if (op.status === status) n++;
    return n;
  }
}

export interface CheckReport {
  keys: number;
  acked: number;
  unknown: number;
  /** Keys whose final state came from an unknown operation after the last acked one. */
  resolvedByUnknown: number;
  violations: string[];
}

/**
 * The final state of each key must be the state its last acknowledged operation left, or the
 * state left by an operation after it whose outcome is unknown (it may have been applied before
 * the crash that cut its reply off). Anything else is a lost write, a resurrected delete, or a
 * value nobody wrote.
 */
export function checkHistory(history: History, final: ReadonlyMap<string, string | undefined>): CheckReport {
  const report: CheckReport = { keys: 0, acked: 0, unknown: 0, resolvedByUnknown: 0, violations: [] };
  const stateOf = (op: KeyOp): string | undefined => (op.kind === 'set' ? op.value : undefined);
  const show = (v: string | undefined): string => (v === undefined ? 'absent' : JSON.stringify(v.slice(0, 24)));
  for (const [key, ops] of history.ops) {
    report.keys++;
    let last = -1;
    ops.forEach((op, i) => {
      if (op.status === 'acked') {
        report.acked++;
        last = i;
      } else if (op.status === 'unknown' || op.status === 'pending') report.unknown++;
    });
    const allowed = new Set<string | undefined>([last >= 0 ? stateOf(ops[last]!) : undefined]);
    for (let i = last + 1; i < ops.length; i++) if (ops[i]!.status !== 'failed') allowed.add(stateOf(ops[i]!));
    if (!final.has(key)) {
      report.violations.push(`${key}: never read back`);
      continue;
    }
    const got = final.get(key);
    if (allowed.has(got)) {
      if (last >= 0 && got !== stateOf(ops[last]!)) report.resolvedByUnknown++;
      continue;
    }
    const everWritten = ops.some((op) => op.kind === 'set' && op.value === got);
    const lastAcked = last >= 0 ? `${ops[last]!.kind} ${show(stateOf(ops[last]!))}` : 'none';
    const lastKind = last >= 0 ? ops[last]!.kind : undefined;
    const kind =
      got !== undefined && !everWritten
        ? 'GARBAGE (never written)'
        : got === undefined
          ? 'LOST (acked write missing)'
          : lastKind === 'del'
            ? 'RESURRECTED (deleted key came back)'
            : 'STALE (older value came back)';
    report.violations.push(`${key}: ${kind}: got ${show(got)}; last acked op ${lastAcked}; allowed ${[...allowed].map(show).join(' | ')}; ${ops.length - last - 1} op(s) after it`);
  }
  return report;
}


export interface TortureWriterOptions {
  id: number;
  /** The keys this writer owns; nobody else writes them. */
  keys: readonly string[];
  /** Requests in flight at once on the connection. */
  window: number;
  /** Share of operations that are DEL. */
  delShare: number;
  /** Approximate value size in bytes. */
  valueBytes: number;
  random: () => number;
}

const UNAVAILABLE = /^ERR node \S+ unavailable\b/;

/**
 * Sends SET (unique values) and DEL over one text connection to the proxy, `window` at a time,
 * and records each outcome in the history: OK / DELETED / NOT_FOUND are acknowledged,
 * `ERR node ... unavailable` is unknown (the request may have been applied before the server
 * died), `ERR disk write failed` is a definite failure. Any other reply is recorded as unknown
 * and kept in `unexpected`. If the connection itself drops, everything outstanding is unknown
 * and the writer reconnects.
 */
export class TortureWriter {
  readonly unexpected: string[] = [];
  sent = 0;
  acked = 0;
  unknown = 0;
  private socket: net.Socket | undefined;
  private outstanding: KeyOp[] = [];
  private buffered = '';
  private stopped = false;
  private idle: (() => void) | undefined;
  private throttled = false;
  private seq = 0;
  private readonly padding: string;

  constructor(
    private readonly port: number,
    private readonly history: History,
    private readonly opts: TortureWriterOptions,
  ) {
    this.padding = 'p'.repeat(Math.max(0, opts.valueBytes - 24));
  }

  start(): void {
    this.connect();
  }

  private connect(): void {
    if (this.stopped) return this.idle?.();
    const socket = net.connect({ port: this.port, host: HOST, noDelay: true });
    this.socket = socket;
    socket.setEncoding('latin1');
    socket.on('error', () => {});
    socket.once('connect', () => this.fill());
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.once('close', () => {
      // Replies that never came: the requests may or may not have been applied.
      for (const op of this.outstanding.splice(0)) this.settle(op, 'unknown');
      this.buffered = '';
      if (this.socket === socket) this.socket = undefined;
      if (this.stopped) this.idle?.();
      else setImmediate(() => this.connect());
    });
  }

  private fill(): void {
    const socket = this.socket;
    if (socket === undefined || this.stopped || this.throttled || socket.connecting) return;
    let out = '';
    while (this.outstanding.length < this.opts.window) {
      const key = this.opts.keys[Math.floor(this.opts.random() * this.opts.keys.length)]!;
      const del = this.opts.random() < this.opts.delShare;
      const value = del ? '' : `w${this.opts.id}.${++this.seq}.${this.padding}`;
      const op: KeyOp = { kind: del ? 'del' : 'set', value, status: 'pending' };
      this.history.add(key, op);
      this.outstanding.push(op);
      this.sent++;
      out += del ? `DEL ${key}\n` : `SET ${key} ${value}\n`;
    }
    if (out !== '') socket.write(out);
  }

  private onData(chunk: string): void {
    const lines = (this.buffered + chunk).split('\n');
    this.buffered = lines.pop()!;
    let unavailable = false;
    for (const line of lines) {
      const op = this.outstanding.shift();
      if (op === undefined) {
        this.unexpected.push(`reply with nothing outstanding: ${line}`);
        continue;
      }
      const ok = op.kind === 'set' ? line === 'OK' : line === 'DELETED' || line === 'NOT_FOUND';
      if (ok) this.settle(op, 'acked');
      else if (UNAVAILABLE.test(line)) {
        unavailable = true;
        this.settle(op, 'unknown');
      } else if (line.startsWith('ERR disk write failed')) this.settle(op, 'failed');
      else {
        this.unexpected.push(`${op.kind.toUpperCase()}: ${line}`);
        this.settle(op, 'unknown');
      }
    }
    if (this.stopped && this.outstanding.length === 0) {
      this.socket?.end();
      return;
    }
    if (unavailable && !this.throttled) {
      // A node is down and the proxy answers at once: without a pause this loop would spin,
      // piling up thousands of unknown operations and starving the restart of CPU. This is a
      // rate limit on retries, not a wait for a condition.
      this.throttled = true;
      setTimeout(() => {
        this.throttled = false;
        this.fill();
      }, 20);
      return;
    }
    this.fill();
  }

  private settle(op: KeyOp, status: OpStatus): void {
    op.status = status;
    if (status === 'acked') this.acked++;
    else if (status === 'unknown') this.unknown++;
  }

  /** Send nothing more; resolves once every outstanding request is answered or given up on. */
  stop(): Promise<void> {
    this.stopped = true;
    return new Promise((resolve) => {
      this.idle = resolve;
      if (this.socket === undefined) return resolve();
      if (this.outstanding.length === 0) this.socket.end();
    });
  }

  /** Tear the connection down at once (cleanup after a failure). */
  destroy(): void {
    this.stopped = true;
    this.socket?.destroy();
  }
}

// ---------------------------------------------------------------------------------------------
// A small tmpfs for the disk-full test

/** Mount a tmpfs of `size` (e.g. '2m') on a fresh directory; needs root. */
export function mountTmpfs(size: string): string {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new Error(`the disk-full test mounts a ${size} tmpfs (mount -t tmpfs -o size=${size} tmpfs <dir>), which needs root; this process runs as uid ${process.getuid()}. Run the suite as root (CI does).`);
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvstore-diskfull-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { stdio: 'pipe' });
  } catch (err) {
    fs.rmdirSync(dir);
    const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim() ?? '';
    throw new Error(`could not mount a ${size} tmpfs on ${dir} (mount -t tmpfs -o size=${size} tmpfs ${dir}): ${stderr || (err as Error).message}`);
  }
  return dir;
}

/** Unmount (lazily if something still holds it) and remove the mount point. */
export function unmountTmpfs(dir: string): void {
  try {
    execFileSync('umount', [dir], { stdio: 'pipe' });
  } catch {
    execFileSync('umount', ['-l', dir], { stdio: 'pipe' });
  }
  fs.rmdirSync(dir);
}

/** Bytes still free for an unprivileged writer on the filesystem holding `dir`. */
export function freeBytes(dir: string): number {
  const s = fs.statfsSync(dir);
  return s.bavail * s.bsize;
}
