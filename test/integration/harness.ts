// Shared machinery for the integration tests: real kv-server / kv-proxy / kv-client processes
// spawned from bin/, free ports from the OS, waits that poll against a deadline (never a fixed
// sleep), a small text-protocol client, and a registry that kills every process we started.
//
// Each test file runs in its own vitest worker, so the registry below is per file; files can
// run in parallel because every process gets its own temp dir and an OS-chosen port.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const BIN = {
  server: path.join(ROOT, 'bin', 'kv-server'),
  proxy: path.join(ROOT, 'bin', 'kv-proxy'),
  client: path.join(ROOT, 'bin', 'kv-client'),
} as const;

export const HOST = '127.0.0.1';
/** How long a process gets to print its banner. Generous: CI machines run every file at once. */
export const START_TIMEOUT_MS = 20_000;

// ---------------------------------------------------------------------------------------------
// Cleanup registry

const liveProcs = new Set<ChildProcess>();
const tempDirs = new Set<string>();
const openSockets = new Set<net.Socket>();

/** A fresh temp directory, removed by cleanup(). */
export function tempDir(label = 'kv'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `kvstore-it-${label}-`));
  tempDirs.add(dir);
  return dir;
}

function track(proc: ChildProcess): void {
  liveProcs.add(proc);
  proc.once('exit', () => liveProcs.delete(proc));
}

/** SIGKILL every process this file started (by pid), close sockets, remove temp dirs. */
export async function cleanup(): Promise<void> {
  for (const s of openSockets) s.destroy();
  openSockets.clear();
  const procs = [...liveProcs];
  await Promise.all(
    procs.map(
      (p) =>
        new Promise<void>((resolve) => {
          if (p.exitCode !== null || p.signalCode !== null) return resolve();
          p.once('exit', () => resolve());
          try {
            if (p.pid !== undefined) process.kill(p.pid, 'SIGKILL');
          } catch {
            resolve(); // already gone
          }
        }),
    ),
  );
  for (const dir of tempDirs) fs.rmSync(dir, { recursive: true, force: true });
  tempDirs.clear();
}

// Last resort if the worker exits without running its hooks: never leave servers behind.
process.once('exit', () => {
  for (const p of liveProcs) {
    try {
      if (p.pid !== undefined) process.kill(p.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Ports and waiting

/** A port the OS says is free right now (listen on 0, read it, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, HOST, () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/** Poll `check` until it returns a value other than undefined, or fail after `timeoutMs`. */
export async function waitFor<T>(what: string, timeoutMs: number, check: () => Promise<T | undefined> | T | undefined, intervalMs = 25): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const why = lastError instanceof Error ? `: ${lastError.message}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${why}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

function tryConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: HOST });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Resolve once `port` accepts TCP connections; throw at the deadline (ms from now). */
export async function waitForPort(port: number, timeoutMs = START_TIMEOUT_MS): Promise<void> {
  await waitFor(`port ${port} to accept connections`, timeoutMs, async () => ((await tryConnect(port)) ? true : undefined));
}

// ---------------------------------------------------------------------------------------------
// Spawned processes

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ProcHandle {
  readonly kind: 'server' | 'proxy';
  readonly pid: number;
  readonly port: number;
  readonly dir: string;
  /** The whole command line after the bin path. */
  readonly args: readonly string[];
  /** The flags given as StartOptions.args (kept by restart()). */
  readonly extraArgs: readonly string[];
  readonly proc: ChildProcess;
  /** Lines printed on stdout so far (banner and JSON logs). */
  readonly stdout: string[];
  readonly stderr: string[];
  kill(signal?: NodeJS.Signals): void;
  waitForExit(timeoutMs?: number): Promise<ExitStatus>;
  /** The last lines of output, for failure messages. */
  tail(lines?: number): string;
}

export interface StartOptions {
  /** Omit to get a free port from the OS. */
  port?: number;
  dir: string;
  /** Extra flags. */
  args?: readonly string[];
}

class SpawnedProcess implements ProcHandle {
  readonly stdout: string[] = [];
  readonly stderr: string[] = [];
  private exitStatus: ExitStatus | undefined;
  private readonly exited: Promise<ExitStatus>;
  private readonly lineWaiters: (() => void)[] = [];

  constructor(
    readonly kind: 'server' | 'proxy',
    readonly proc: ChildProcess,
    public port: number,
    readonly dir: string,
    readonly args: readonly string[],
    readonly extraArgs: readonly string[],
  ) {
    track(proc);
    collectLines(proc.stdout!, this.stdout, () => this.notify());
    collectLines(proc.stderr!, this.stderr, () => this.notify());
    this.exited = new Promise((resolve) => {
      proc.once('exit', (code, signal) => {
        this.exitStatus = { code, signal };
        resolve(this.exitStatus);
        this.notify();
      });
    });
  }

  get pid(): number {
    return this.proc.pid!;
  }

  private notify(): void {
    for (const w of this.lineWaiters.splice(0)) w();
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (this.exitStatus !== undefined) return;
    try {
      process.kill(this.pid, signal);
    } catch {
      // already gone
    }
  }

  async waitForExit(timeoutMs = 15_000): Promise<ExitStatus> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${this.kind} pid ${this.pid} did not exit within ${timeoutMs} ms\n${this.tail()}`)), timeoutMs);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Wait for a stdout line matching `match`; fails early if the process exits first. */
  async waitForLine(match: (line: string) => boolean, timeoutMs: number): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    let seen = 0;
    for (;;) {
      for (; seen < this.stdout.length; seen++) if (match(this.stdout[seen]!)) return this.stdout[seen]!;
      if (this.exitStatus !== undefined) throw new ExitedEarly(this.exitStatus, this.tail());
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.kind} pid ${this.pid}: no matching line within ${timeoutMs} ms\n${this.tail()}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.lineWaiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  tail(lines = 20): string {
    return [`--- ${this.kind} ${this.args.join(' ')} (pid ${this.pid}) stdout:`, ...this.stdout.slice(-lines), '--- stderr:', ...this.stderr.slice(-lines)].join('\n');
  }
}

class ExitedEarly extends Error {
  constructor(
    readonly status: ExitStatus,
    readonly output: string,
  ) {
    super(`process exited (code ${status.code}, signal ${status.signal}) before it was ready\n${output}`);
  }
}

/** Split a stream into lines, calling `onLine` whenever some arrived (and at its end). */
export function collectLines(stream: NodeJS.ReadableStream, into: string[], onLine: () => void): void {
  let rest = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    const parts = (rest + chunk).split('\n');
    rest = parts.pop()!;
    if (parts.length > 0) {
      into.push(...parts);
      onLine();
    }
  });
  stream.on('end', () => {
    if (rest !== '') into.push(rest);
    rest = '';
    onLine();
  });
}

export const serverBanner = (port: number): string => `--- Persistent Server Port ${port} (WAL: wal_${port}.log) ---`;
export const PROXY_BANNER = /^--- KV Proxy\/Gateway running on Port (\d+) ---$/;

function spawnBin(kind: 'server' | 'proxy', opts: StartOptions, port: number): SpawnedProcess {
  const args = [
    ...(kind === 'server' ? [String(port)] : ['--port', String(port)]),
    '--dir',
    opts.dir,
    '--log-level',
    'warn',
    ...(opts.args ?? []),
  ];
  const proc = spawn(process.execPath, [kind === 'server' ? BIN.server : BIN.proxy, ...args], {
    cwd: opts.dir,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return new SpawnedProcess(kind, proc, port, opts.dir, args, opts.args ?? []);
}

/**
 * Start one process and wait for its banner. With no fixed port, a port another test grabbed
 * between freePort() and our bind is retried on a new port; with a fixed port (a restart),
 * the same port is retried until the deadline.
 */
async function startWithRetry(kind: 'server' | 'proxy', opts: StartOptions): Promise<ProcHandle> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (let attempt = 1; ; attempt++) {
    // kv-proxy accepts --port 0 and prints the port it bound, which leaves no window for
    // another test to take it; kv-server needs a real port (its WAL is named after it).
    const port = opts.port ?? (kind === 'proxy' ? 0 : await freePort());
    const p = spawnBin(kind, opts, port);
    try {
      const banner = kind === 'server' ? serverBanner(port) : undefined;
      const line = await p.waitForLine((l) => (banner !== undefined ? l === banner : PROXY_BANNER.test(l)), Math.max(1000, deadline - Date.now()));
      if (kind === 'proxy') p.port = Number(PROXY_BANNER.exec(line)![1]);
      return p;
    } catch (err) {
      const inUse = err instanceof ExitedEarly && /already in use/.test(p.stderr.join('\n'));
      if (!inUse || Date.now() >= deadline) {
        p.kill('SIGKILL');
        throw err;
      }
      if (opts.port !== undefined) await new Promise((r) => setTimeout(r, 50 * attempt)); // backoff on a fixed port
    }
  }
}

/** `bin/kv-server <port> --dir <dir>`; resolves once the banner is printed. */
export function startServer(opts: StartOptions): Promise<ProcHandle> {
  return startWithRetry('server', opts);
}

/** `bin/kv-proxy --port <port> --dir <dir>`; resolves once the banner is printed. */
export function startProxy(opts: StartOptions): Promise<ProcHandle> {
  return startWithRetry('proxy', opts);
}

/** Start the same program again on the same port, dir and flags (after a kill). */
export function restart(p: ProcHandle): Promise<ProcHandle> {
  const opts = { port: p.port, dir: p.dir, args: p.extraArgs };
  return p.kind === 'server' ? startServer(opts) : startProxy(opts);
}

/** SIGKILL and wait until the process is gone (its port is free again). */
export async function crash(p: ProcHandle): Promise<void> {
  p.kill('SIGKILL');
  await p.waitForExit();
}

// ---------------------------------------------------------------------------------------------
// Text protocol client

/** Commands whose text reply is several lines closed by `END`. */
const MULTI_LINE = new Set(['INFO', 'NODES', 'MIGRATION', 'HELP']);

interface Pending {
  multi: boolean;
  lines: string[];
  resolve: (reply: string) => void;
  reject: (err: Error) => void;
}

/**
 * One socket, lines out, reply lines back in order. A reply is one line, or for
 * INFO/NODES/MIGRATION/HELP the lines before `END` joined with '\n' (an `ERR` line instead of
 * the body is a one-line error reply).
 */
export class TextClient {
  private buffered: Buffer = Buffer.alloc(0);
  private readonly pending: Pending[] = [];
  private closedError: Error | undefined;

  private constructor(
    readonly socket: net.Socket,
    readonly port: number,
  ) {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => (this.closedError ??= err));
    socket.on('close', () => {
      this.closedError ??= new Error(`connection to port ${port} closed`);
      for (const p of this.pending.splice(0)) p.reject(new Error(`${this.closedError.message} with a reply outstanding (got ${JSON.stringify(p.lines)})`));
    });
  }

  static connect(port: number): Promise<TextClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ port, host: HOST, noDelay: true });
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        openSockets.add(socket);
        socket.once('close', () => openSockets.delete(socket));
        resolve(new TextClient(socket, port));
      });
    });
  }

  private onData(chunk: Buffer): void {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    let start = 0;
    for (;;) {
      const lf = this.buffered.indexOf(0x0a, start);
      if (lf < 0) break;
      this.onLine(this.buffered.toString('utf8', start, lf));
      start = lf + 1;
    }
    this.buffered = this.buffered.subarray(start);
  }

  private onLine(line: string): void {
    const p = this.pending[0];
    if (p === undefined) {
      this.socket.destroy(new Error(`unexpected line from port ${this.port}: ${JSON.stringify(line)}`));
      return;
    }
    if (p.multi) {
      if (line === 'END') return this.finish(p.lines.join('\n'));
      if (p.lines.length === 0 && /^(ERR|NOAUTH|WRONGPASS)\b/.test(line)) return this.finish(line);
      p.lines.push(line);
      return;
    }
    this.finish(line);
  }

  private finish(reply: string): void {
    this.pending.shift()!.resolve(reply);
  }

  /**
   * Write every line in ONE socket write (as `nc` would pipe them) and resolve with the
   * replies in order. Fails if the replies do not all arrive within `timeoutMs`.
   */
  async pipeline(lines: readonly string[], timeoutMs = 30_000): Promise<string[]> {
    if (this.closedError) throw this.closedError;
    const replies = lines.map(
      (line) =>
        new Promise<string>((resolve, reject) => {
          const name = line.trimStart().split(/[ \t]/, 1)[0]!.toUpperCase();
          this.pending.push({ multi: MULTI_LINE.has(name), lines: [], resolve, reject });
        }),
    );
    this.socket.write(lines.map((l) => `${l}\n`).join(''));
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const got = lines.length - this.pending.length;
        reject(new Error(`port ${this.port}: ${got} of ${lines.length} replies within ${timeoutMs} ms`));
        this.socket.destroy();
      }, timeoutMs);
    });
    try {
      return await Promise.race([Promise.all(replies), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  async send(line: string, timeoutMs?: number): Promise<string> {
    return (await this.pipeline([line], timeoutMs))[0]!;
  }

  close(): void {
    this.socket.end();
  }
}

/** Connect, send one line, read its reply, disconnect. */
export async function ask(port: number, line: string): Promise<string> {
  const c = await TextClient.connect(port);
  try {
    return await c.send(line);
  } finally {
    c.socket.destroy();
  }
}

/** DBSIZE asked of a server (or the proxy) directly, as a number. */
export async function dbsize(port: number): Promise<number> {
  const reply = await ask(port, 'DBSIZE');
  if (!/^\d+$/.test(reply)) throw new Error(`DBSIZE on port ${port} replied ${JSON.stringify(reply)}`);
  return Number(reply);
}

/**
 * GET every key of `expected` on one pipelined connection; returns `key: reply` for each key
 * whose reply is not `VALUE <expected value>` (empty when all read back).
 */
export async function wrongValues(client: TextClient, expected: ReadonlyMap<string, string>): Promise<string[]> {
  const keys = [...expected.keys()];
  const replies = await client.pipeline(keys.map((k) => `GET ${k}`));
  return replies.flatMap((r, i) => (r === `VALUE ${expected.get(keys[i]!)}` ? [] : [`${keys[i]}: ${r}`]));
}

/** The server's write-ahead log file. */
export const walPath = (server: ProcHandle): string => path.join(server.dir, `wal_${server.port}.log`);

/** Bytes of the server's log (INFO's wal_size_bytes): the file also holds zeros written ahead of it. */
export async function walBytes(port: number): Promise<number> {
  const m = /^wal_size_bytes:(\d+)$/m.exec(await ask(port, 'INFO persistence'));
  if (m === null) throw new Error(`INFO persistence on port ${port} has no wal_size_bytes`);
  return Number(m[1]);
}

// ---------------------------------------------------------------------------------------------
// kv-client and other programs

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Run a program to completion (killed, and reported as such, after `timeoutMs`). */
export function run(command: string, args: readonly string[], options: { stdin?: string | Buffer; timeoutMs?: number; cwd?: string } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const proc = spawn(command, args, { cwd: options.cwd ?? os.tmpdir(), stdio: [options.stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    track(proc);
    let stdout = '';
    let stderr = '';
    proc.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    proc.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => proc.kill('SIGKILL'), options.timeoutMs ?? 30_000);
    proc.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    proc.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    if (options.stdin !== undefined) {
      proc.stdin!.on('error', () => {}); // the program may exit before reading everything
      proc.stdin!.end(options.stdin);
    }
  });
}

/** `bin/kv-client ARGS...`, e.g. runClient(['--port', '4000', 'GET', 'user1']). */
export function runClient(args: readonly string[], options: { stdin?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  return run(process.execPath, [BIN.client, ...args], options);
}

/** stdout split into lines, without the final newline. */
export function lines(text: string): string[] {
  const out = text.split('\n');
  if (out[out.length - 1] === '') out.pop();
  return out;
}

/** Full path of an executable on PATH, or a failure that says how to install it. */
export function requireTool(name: string, install: string): string {
  for (const dir of (process.env['PATH'] ?? '').split(path.delimiter)) {
    if (dir === '') continue;
    const full = path.join(dir, name);
    try {
      fs.accessSync(full, fs.constants.X_OK);
      return full;
    } catch {
      // not here
    }
  }
  throw new Error(`'${name}' is not installed (not found on PATH). This test drives the real tool: install it with \`${install}\`.`);
}

// ---------------------------------------------------------------------------------------------
// A cluster: N servers and a proxy, each in its own temp dir

export interface Cluster {
  proxy: ProcHandle;
  servers: ProcHandle[];
}

export async function startCluster(servers: number, proxyArgs: readonly string[] = []): Promise<Cluster> {
  const started = await Promise.all(Array.from({ length: servers }, (_, i) => startServer({ dir: tempDir(`s${i + 1}`) })));
  const proxy = await startProxy({ dir: tempDir('proxy'), args: proxyArgs });
  return { proxy, servers: started };
}

export const nodeAddress = (p: ProcHandle): string => `${HOST}:${p.port}`;


// ---------------------------------------------------------------------------------------------
// A writer that keeps SETs flowing until the connection dies, recording which were acknowledged

export interface SetStreamOptions {
  /** Keys are `${prefix}${i}`. */
  prefix: string;
  value: (i: number) => string;
  /** Requests in flight at once. */
  window?: number;
  /** Stop after this many SETs (default: until stop() or the connection closes). */
  limit?: number;
}

/**
 * `SET <prefix><i> <value(i)>` for i = 0, 1, 2, ... on one text-protocol socket, with up to
 * `window` requests outstanding. Replies arrive in order, so each `OK` acknowledges the oldest
 * outstanding SET. Ends when the peer closes the connection (a crash), or after `limit`.
 */
export class SetStream {
  /** Indexes whose SET was answered `OK`, in order. */
  readonly acked: number[] = [];
  /** Replies other than `OK`. */
  readonly failures: string[] = [];
  /** Resolves when the connection is gone. */
  readonly closed: Promise<void>;
  sent = 0;
  private readonly outstanding: number[] = [];
  private readonly socket: net.Socket;
  private buffered = '';
  private stopped = false;

  constructor(
    port: number,
    private readonly opts: SetStreamOptions,
  ) {
    this.socket = net.connect({ port, host: HOST, noDelay: true });
    openSockets.add(this.socket);
    this.socket.setEncoding('latin1');
    this.closed = new Promise((resolve) => this.socket.once('close', () => resolve()));
    this.socket.once('close', () => openSockets.delete(this.socket));
    this.socket.on('error', () => {}); // a crash of the peer is the point of most uses
    this.socket.once('connect', () => this.fill());
    this.socket.on('data', (chunk: string) => this.onData(chunk));
  }

  private fill(): void {
    const window = this.opts.window ?? 64;
    const limit = this.opts.limit ?? Infinity;
    let out = '';
    while (!this.stopped && this.outstanding.length < window && this.sent < limit) {
      const i = this.sent++;
      this.outstanding.push(i);
      out += `SET ${this.opts.prefix}${i} ${this.opts.value(i)}\n`;
    }
    if (out !== '') this.socket.write(out);
    else if (this.outstanding.length === 0) this.socket.end();
  }

  private onData(chunk: string): void {
    const parts = (this.buffered + chunk).split('\n');
    this.buffered = parts.pop()!;
    for (const line of parts) {
      const i = this.outstanding.shift();
      if (i === undefined) {
        this.failures.push(`a reply with no request outstanding: ${line}`);
        this.socket.destroy();
        return;
      }
      if (line === 'OK') this.acked.push(i);
      else this.failures.push(`${this.opts.prefix}${i}: ${line}`);
    }
    this.fill();
  }

  /** Send nothing more; the connection ends once the outstanding replies are in. */
  stop(): void {
    this.stopped = true;
    if (this.outstanding.length === 0) this.socket.end();
  }
}
