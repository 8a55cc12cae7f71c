// Extra machinery for the robustness tests (hostile input, connection limits, failing nodes,
// authentication, several hosts). harness.ts stays the source of processes, ports and cleanup;
// this file adds what those tests need on top of it:
//  - RawConnection: a socket that keeps the bytes it receives and the moment it closed, so a
//    test can ask "which bytes came back, and did the peer hang up?" without a protocol client
//    hiding either;
//  - RSS and peak RSS of a process from /proc, and a small RESP request encoder;
//  - the same test against a kv-server or a kv-proxy (startTarget), and which server owns
//    which key (keysByOwner);
//  - fake servers that are not kv-servers;
//  - network namespaces joined to the root namespace by veth pairs, with processes started
//    inside them, all torn down by pid and by name.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import { BIN, HOST, START_TIMEOUT_MS, nodeAddress, serverBanner, startProxy, startServer, tempDir, waitFor, type ProcHandle } from './harness.js';

// ---------------------------------------------------------------------------------------------
// Processes: memory and liveness

/** Resident set size of `pid` in bytes (VmRSS from /proc/<pid>/status). */
export function rssBytes(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status);
  if (!m) throw new Error(`no VmRSS line in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}

/**
 * Reset the process's peak RSS (VmHWM) to its current RSS (`echo 5 > /proc/<pid>/clear_refs`,
 * Linux 4.0+), so peakRssBytes() afterwards reports the peak of what follows.
 */
export function resetPeakRss(pid: number): void {
  fs.writeFileSync(`/proc/${pid}/clear_refs`, '5');
}

/** Peak resident set size of `pid` in bytes (VmHWM) since start or the last resetPeakRss(). */
export function peakRssBytes(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmHWM:\s+(\d+)\s+kB$/m.exec(status);
  if (!m) throw new Error(`no VmHWM line in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}

export const MiB = 1024 * 1024;

export function mib(bytes: number): string {
  return `${(bytes / MiB).toFixed(1)} MiB`;
}

/** True while `pid` exists and is not a zombie. */
export function isRunning(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 3, after the parenthesised command name, is the state.
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Milliseconds `work` took, and its result. */
export async function timed<T>(work: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const started = performance.now();
  const value = await work();
  return { value, ms: Math.round(performance.now() - started) };
}

// ---------------------------------------------------------------------------------------------
// Targets: most behaviours are checked against a kv-server and against the kv-proxy

export type TargetKind = 'kv-server' | 'kv-proxy';
export const TARGETS: readonly TargetKind[] = ['kv-server', 'kv-proxy'];

/**
 * A kv-server, or a kv-proxy whose ring holds `backend`, started with `args`. The backend is
 * a separate default kv-server, so a proxy's limits are tested on the proxy alone.
 */
export async function startTarget(kind: TargetKind, args: readonly string[], backend: ProcHandle): Promise<ProcHandle> {
  if (kind === 'kv-server') return startServer({ dir: tempDir('target'), args });
  const proxy = await startProxy({ dir: tempDir('target-proxy'), args });
  const admin = await RawConnection.connect(proxy.port);
  try {
    const [added] = await admin.ask(`ADD ${nodeAddress(backend)}`);
    if (!/^OK (added|already)/.test(added!)) throw new Error(`ADD ${nodeAddress(backend)} to the proxy answered ${added}`);
  } finally {
    admin.destroy();
  }
  return proxy;
}

// ---------------------------------------------------------------------------------------------
// RESP

/** A RESP request: an array of bulk strings. */
export function resp(...args: readonly (string | Buffer)[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const a of args) {
    const bytes = typeof a === 'string' ? Buffer.from(a, 'utf8') : a;
    parts.push(Buffer.from(`$${bytes.length}\r\n`), bytes, Buffer.from('\r\n'));
  }
  return Buffer.concat(parts);
}

/** End offset of the RESP reply starting at `pos`, or -1 if it is not complete yet. */
function respReplyEnd(buf: Buffer, pos: number): number {
  if (pos >= buf.length) return -1;
  const lf = buf.indexOf(0x0a, pos);
  if (lf < 0) return -1;
  const kind = String.fromCharCode(buf[pos]!);
  const header = buf.toString('latin1', pos + 1, lf).replace(/\r$/, '');
  if (kind === '+' || kind === '-' || kind === ':') return lf + 1;
  const n = Number(header);
  if (kind === '$') {
    if (n < 0) return lf + 1;
    const end = lf + 1 + n + 2;
    return end <= buf.length ? end : -1;
  }
  if (kind === '*') {
    let at = lf + 1;
    for (let i = 0; i < n; i++) {
      at = respReplyEnd(buf, at);
      if (at < 0) return -1;
    }
    return at;
  }
  throw new Error(`not a RESP reply at offset ${pos}: ${JSON.stringify(buf.toString('latin1', pos, pos + 40))}`);
}

// ---------------------------------------------------------------------------------------------
// Raw connections

const rawConnections = new Set<RawConnection>();

/** Destroy every RawConnection still open (call from afterAll/afterEach). */
export function destroyRawConnections(): void {
  for (const c of rawConnections) c.destroy();
  rawConnections.clear();
}

export interface RawConnectOptions {
  host?: string;
  /** Do not read from the socket at all (a client that never reads its replies). */
  paused?: boolean;
  /** Give up connecting after this long. */
  timeoutMs?: number;
}

/**
 * A client socket that keeps what it receives until a test takes it. Replies are taken off the
 * front with `line()` / `reply()`, `text()` shows the rest; `waitForClose()` reports when (and
 * whether) the peer hung up.
 */
export class RawConnection {
  private chunks: Buffer[] = [];
  /**
   * Bytes received and not yet taken by line()/reply(). Taken bytes are dropped, so reading a
   * long stream of large replies costs linear work, not quadratic.
   */
  private pending = Buffer.alloc(0);
  receivedBytes = 0;
  /** performance.now() when the socket closed, or undefined while open. */
  closedAt: number | undefined;
  /** The socket error, if it closed with one (ECONNRESET, EPIPE...). */
  error: NodeJS.ErrnoException | undefined;
  private readonly waiters = new Set<() => void>();

  private constructor(readonly socket: net.Socket) {
    rawConnections.add(this);
    socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.receivedBytes += chunk.length;
      this.notify();
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      this.error ??= err;
    });
    socket.on('close', () => {
      this.closedAt = performance.now();
      rawConnections.delete(this);
      this.notify();
    });
  }

  static connect(port: number, options: RawConnectOptions = {}): Promise<RawConnection> {
    const host = options.host ?? HOST;
    const timeoutMs = options.timeoutMs ?? 10_000;
    return new Promise((resolve, reject) => {
      const socket = net.connect({ port, host, noDelay: true });
      if (options.paused) socket.pause();
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`connect to ${host}:${port} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(new RawConnection(socket));
      });
    });
  }

  get closed(): boolean {
    return this.closedAt !== undefined;
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }

  /** Bytes received and not yet taken by line()/reply(), as one buffer. */
  received(): Buffer {
    if (this.chunks.length > 0) {
      this.pending = Buffer.concat([this.pending, ...this.chunks]);
      this.chunks = [];
    }
    return this.pending;
  }

  /** Bytes received and not yet taken by line()/reply(), as latin1 text (bytes map 1:1 to characters). */
  text(): string {
    return this.received().toString('latin1');
  }

  private take(end: number): string {
    const text = this.pending.toString('latin1', 0, end);
    this.pending = this.pending.subarray(end);
    return text;
  }

  /** Resolve when `check` returns a value; reject at the deadline, or when the socket closed first. */
  until<T>(what: string, timeoutMs: number, check: () => T | undefined, orClosed = false): Promise<T> {
    return new Promise((resolve, reject) => {
      const attempt = (): void => {
        let value: T | undefined;
        try {
          value = check();
        } catch (err) {
          finish();
          reject(err as Error);
          return;
        }
        if (value !== undefined) {
          finish();
          resolve(value);
        } else if (this.closed && !orClosed) {
          finish();
          reject(new Error(`connection closed while waiting for ${what}; received ${JSON.stringify(this.text().slice(0, 300))}`));
        }
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; received ${JSON.stringify(this.text().slice(-300))} (closed: ${this.closed})`));
      }, timeoutMs);
      const finish = (): void => {
        clearTimeout(timer);
        this.waiters.delete(attempt);
      };
      this.waiters.add(attempt);
      attempt();
    });
  }

  /** The next line (without its LF, CR kept), waiting for it. */
  line(timeoutMs = 10_000): Promise<string> {
    return this.until('a reply line', timeoutMs, () => {
      const lf = this.received().indexOf(0x0a);
      if (lf < 0) return undefined;
      return this.take(lf + 1).slice(0, -1);
    });
  }

  /** The next complete RESP reply, as its raw bytes in latin1 (`+OK\r\n`, `$1\r\nv\r\n`...). */
  reply(timeoutMs = 10_000): Promise<string> {
    return this.until('a RESP reply', timeoutMs, () => {
      const end = respReplyEnd(this.received(), 0);
      return end < 0 ? undefined : this.take(end);
    });
  }

  /** The next complete RESP reply as raw bytes. */
  async replyBytes(timeoutMs = 10_000): Promise<Buffer> {
    return Buffer.from(await this.reply(timeoutMs), 'latin1');
  }

  /** Write and send one text line per argument, and read one single-line reply for each. */
  async ask(...lines: string[]): Promise<string[]> {
    this.socket.write(lines.map((l) => `${l}\n`).join(''));
    const out: string[] = [];
    for (let i = 0; i < lines.length; i++) out.push(await this.line());
    return out;
  }

  /** Send a RESP request and read its reply (raw text). */
  async askResp(...args: (string | Buffer)[]): Promise<string> {
    this.socket.write(resp(...args));
    return this.reply();
  }

  /** Resolves with the time the peer closed the connection; rejects at the deadline. */
  waitForClose(timeoutMs = 10_000): Promise<number> {
    return this.until('the connection to close', timeoutMs, () => this.closedAt, true);
  }

  /**
   * Write `total` bytes of `fill` in `chunkSize` writes, waiting for 'drain' when the socket
   * says so. Stops early, without failing, if the peer closes the connection (often the
   * expected outcome); returns how many bytes were handed to the socket.
   */
  async stream(total: number, chunkSize: number, fill = 0x61): Promise<number> {
    const chunk = Buffer.alloc(chunkSize, fill);
    let written = 0;
    while (written < total && !this.closed && !this.socket.destroyed) {
      const n = Math.min(chunkSize, total - written);
      const ok = this.socket.write(n === chunkSize ? chunk : chunk.subarray(0, n));
      written += n;
      if (!ok) {
        await new Promise<void>((resolve) => {
          const done = (): void => {
            this.socket.off('drain', done);
            this.socket.off('close', done);
            resolve();
          };
          this.socket.once('drain', done);
          this.socket.once('close', done);
        });
      }
    }
    return written;
  }

  destroy(): void {
    this.socket.destroy();
    rawConnections.delete(this);
  }
}

/**
 * Connect, send `request` (bytes) and wait until the peer closes the connection; returns all
 * bytes received as latin1 text. For requests that must end in a protocol error and a close.
 */
export async function sendUntilClosed(port: number, request: Buffer | string, timeoutMs = 10_000): Promise<string> {
  const c = await RawConnection.connect(port);
  try {
    c.socket.write(request);
    await c.waitForClose(timeoutMs);
    return c.text();
  } finally {
    c.destroy();
  }
}

/** Open a connection, PING it in text and in RESP; throws unless both answer PONG. */
export async function assertServing(port: number, host = HOST): Promise<void> {
  const c = await RawConnection.connect(port, { host });
  try {
    const [text] = await c.ask('PING');
    if (text !== 'PONG') throw new Error(`text PING on ${host}:${port} answered ${JSON.stringify(text)}`);
    const r = await c.askResp('PING');
    if (r !== '+PONG\r\n') throw new Error(`RESP PING on ${host}:${port} answered ${JSON.stringify(r)}`);
  } finally {
    c.destroy();
  }
}

/**
 * A command whose text reply is a block of lines closed by `END` (INFO, NODES, MIGRATION),
 * on a fresh connection; returns the lines, or throws with the one-line error instead.
 */
export async function askBlock(port: number, command: string, host = HOST, preamble: readonly string[] = []): Promise<string[]> {
  const c = await RawConnection.connect(port, { host });
  try {
    if (preamble.length > 0) await c.ask(...preamble);
    c.socket.write(`${command}\n`);
    const lines: string[] = [];
    for (;;) {
      const line = await c.line();
      if (line === 'END') return lines;
      if (lines.length === 0 && /^(ERR|NOAUTH|WRONGPASS)\b/.test(line)) throw new Error(`${command} on port ${port}: ${line}`);
      lines.push(line);
    }
  } finally {
    c.destroy();
  }
}

/** `INFO <section>` over the text protocol, as a map of its key:value lines. */
export async function info(port: number, section: string, host = HOST): Promise<Map<string, string>> {
  const fields = new Map<string, string>();
  for (const line of await askBlock(port, `INFO ${section}`, host)) {
    const colon = line.indexOf(':');
    if (colon > 0) fields.set(line.slice(0, colon), line.slice(colon + 1));
  }
  return fields;
}

/** connected_clients from INFO clients. */
export async function connectedClients(port: number): Promise<number> {
  return Number((await info(port, 'clients')).get('connected_clients'));
}

// ---------------------------------------------------------------------------------------------
// Which server owns which key (asked of the servers themselves, not computed here)

export interface ServerAddress {
  host?: string;
  port: number;
}

/**
 * SET `count` keys `<prefix><i>` through the proxy, then ask every server which of them it
 * holds. Returns the keys per server, in the order of `servers`.
 */
export async function keysByOwner(proxyPort: number, servers: readonly ServerAddress[], prefix: string, count: number): Promise<string[][]> {
  const keys = Array.from({ length: count }, (_, i) => `${prefix}${i}`);
  const proxy = await RawConnection.connect(proxyPort);
  try {
    const acks = await proxy.ask(...keys.map((k) => `SET ${k} v-${k}`));
    const bad = acks.filter((a) => a !== 'OK');
    if (bad.length > 0) throw new Error(`SET through the proxy failed: ${bad.slice(0, 3).join(' | ')}`);
  } finally {
    proxy.destroy();
  }
  const owned: string[][] = [];
  for (const s of servers) {
    const c = await RawConnection.connect(s.port, { host: s.host });
    try {
      const exists = await c.ask(...keys.map((k) => `EXISTS ${k}`));
      owned.push(keys.filter((_, i) => exists[i] === '1'));
    } finally {
      c.destroy();
    }
  }
  const total = owned.reduce((n, o) => n + o.length, 0);
  if (total !== count) throw new Error(`the servers hold ${total} of the ${count} keys just set`);
  return owned;
}

// ---------------------------------------------------------------------------------------------
// Network namespaces

/** Fail with a clear message unless we can create network namespaces. */
export function requireNetnsSupport(): string {
  const ip = ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip'].find((p) => fs.existsSync(p));
  if (ip === undefined) throw new Error("the 'ip' command (iproute2) is not installed: this test creates network namespaces with it. Install it with `apt-get install -y iproute2`.");
  if (process.getuid?.() !== 0) throw new Error(`this test creates network namespaces and veth pairs and must run as root (uid is ${process.getuid?.()}).`);
  return ip;
}

/** Run `ip ARGS...` and throw with its stderr if it fails. */
function ipCommand(ip: string, args: readonly string[]): string {
  const r = spawnSync(ip, args, { encoding: 'utf8', timeout: 15_000 });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')} failed (status ${r.status}): ${r.stderr || r.error?.message}`);
  return r.stdout;
}

export interface NamespaceHost {
  /** Namespace name. */
  readonly ns: string;
  /** The veth end left in the root namespace. */
  readonly rootIf: string;
  /** The veth end inside the namespace. */
  readonly nsIf: string;
  /** Address of the root end. */
  readonly rootAddress: string;
  /** Address of the namespace end: the "other host". */
  readonly address: string;
}

export interface NsProcess {
  readonly pid: number;
  readonly host: string;
  readonly port: number;
  readonly proc: ChildProcess;
  readonly output: string[];
  kill(signal?: NodeJS.Signals): void;
  waitForExit(timeoutMs?: number): Promise<void>;
}

/**
 * A set of network namespaces, each joined to the root namespace by a veth pair on its own
 * /30 out of one random 10.A.B.0/24 that no local address or route uses. Everything created
 * is recorded and removed by `destroy()` (also on worker exit, as a last resort).
 */
export class NamespaceLab {
  readonly hosts: NamespaceHost[] = [];
  private readonly procs = new Set<NsProcess>();
  private readonly tag = randomBytes(3).toString('hex');
  private readonly subnet: string;
  private destroyed = false;
  private readonly onExit = (): void => this.destroySync();

  constructor(private readonly ip: string) {
    this.subnet = this.pickSubnet();
    process.once('exit', this.onExit);
  }

  /** 10.A.B (as a prefix) whose /24 overlaps no address or route of this machine. */
  private pickSubnet(): string {
    const text = ipCommand(this.ip, ['-4', 'addr']) + ipCommand(this.ip, ['-4', 'route', 'show', 'table', 'all']);
    // Every 10.x.x.x[/len] the machine knows about, as [network, prefix length].
    const used = [...text.matchAll(/\b10\.(\d+)\.(\d+)\.(\d+)(?:\/(\d+))?/g)].map((m) => [(10 << 24) | (Number(m[1]) << 16) | (Number(m[2]) << 8) | Number(m[3]), Number(m[4] ?? 32)] as const);
    const overlaps = (net: number, len: number): boolean =>
      used.some(([other, otherLen]) => {
        const common = Math.min(len, otherLen);
        const mask = common === 0 ? 0 : (~0 << (32 - common)) >>> 0;
        return ((net & mask) >>> 0) === ((other & mask) >>> 0);
      });
    for (let attempt = 0; attempt < 200; attempt++) {
      const a = 100 + Math.floor(Math.random() * 150);
      const b = 1 + Math.floor(Math.random() * 250);
      if (!overlaps(((10 << 24) | (a << 16) | (b << 8)) >>> 0, 24)) return `10.${a}.${b}`;
    }
    throw new Error(`no 10.x.y.0/24 test subnet is free of this machine's addresses and routes:\n${text}`);
  }

  /** Create namespace number `hosts.length` with its veth pair, addresses and routes. */
  addHost(): NamespaceHost {
    const i = this.hosts.length;
    const letter = String.fromCharCode(0x41 + i);
    const host: NamespaceHost = {
      ns: `kvt${this.tag}${letter}`,
      rootIf: `kvt${this.tag}${letter.toLowerCase()}0`,
      nsIf: `kvt${this.tag}${letter.toLowerCase()}1`,
      rootAddress: `${this.subnet}.${i * 4 + 1}`,
      address: `${this.subnet}.${i * 4 + 2}`,
    };
    // Record before creating, so a failure half-way is still cleaned up.
    this.hosts.push(host);
    ipCommand(this.ip, ['netns', 'add', host.ns]);
    ipCommand(this.ip, ['link', 'add', host.rootIf, 'type', 'veth', 'peer', 'name', host.nsIf]);
    ipCommand(this.ip, ['link', 'set', host.nsIf, 'netns', host.ns]);
    ipCommand(this.ip, ['addr', 'add', `${host.rootAddress}/30`, 'dev', host.rootIf]);
    ipCommand(this.ip, ['link', 'set', host.rootIf, 'up']);
    ipCommand(this.ip, ['netns', 'exec', host.ns, this.ip, 'link', 'set', 'lo', 'up']);
    ipCommand(this.ip, ['netns', 'exec', host.ns, this.ip, 'addr', 'add', `${host.address}/30`, 'dev', host.nsIf]);
    ipCommand(this.ip, ['netns', 'exec', host.ns, this.ip, 'link', 'set', host.nsIf, 'up']);
    return host;
  }

  /**
   * Take the namespace's end of the link down (or up). The root end then has no carrier, so
   * packets for the host are dropped on our own veth: they never follow the default route
   * off this machine, as they could if the root end's route disappeared.
   */
  setLink(host: NamespaceHost, state: 'up' | 'down'): void {
    ipCommand(this.ip, ['netns', 'exec', host.ns, this.ip, 'link', 'set', host.nsIf, state]);
  }

  /** Where the root namespace would send a packet for `address` (`ip route get`). */
  routeTo(address: string): string {
    return ipCommand(this.ip, ['route', 'get', address]).trim();
  }

  /** `kv-server <port> --host <addr> --dir <tmp>` inside the namespace; resolves on its banner. */
  async startServer(host: NamespaceHost, port: number, extraArgs: readonly string[] = []): Promise<NsProcess> {
    const dir = tempDir(`ns-${host.ns}`);
    const args = ['netns', 'exec', host.ns, process.execPath, BIN.server, String(port), '--host', host.address, '--dir', dir, '--log-level', 'warn', ...extraArgs];
    // `ip netns exec` (not in batch mode) enters the namespace and execs the program, so the
    // pid we get is kv-server's own.
    const proc = spawn(this.ip, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    const output: string[] = [];
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    const handle: NsProcess = {
      pid: proc.pid!,
      host: host.address,
      port,
      proc,
      output,
      kill: (signal: NodeJS.Signals = 'SIGKILL') => {
        if (proc.exitCode !== null || proc.signalCode !== null) return;
        try {
          process.kill(proc.pid!, signal);
        } catch {
          // already gone
        }
      },
      waitForExit: async (timeoutMs = 15_000) => {
        await waitFor(`pid ${proc.pid} to exit`, timeoutMs, () => (proc.exitCode !== null || proc.signalCode !== null ? true : undefined));
        await exited;
      },
    };
    this.procs.add(handle);
    for (const stream of [proc.stdout!, proc.stderr!]) {
      stream.setEncoding('utf8');
      stream.on('data', (d: string) => output.push(...d.split('\n').filter((l) => l !== '')));
    }
    const banner = serverBanner(port);
    await waitFor(`kv-server in ${host.ns} to print its banner`, START_TIMEOUT_MS, () => {
      if (output.includes(banner)) return true;
      if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`kv-server in ${host.ns} exited: ${output.join('\n')}`);
      return undefined;
    });
    return handle;
  }

  /** Kill every process we started (by pid), delete the namespaces and veth pairs. */
  async destroy(): Promise<void> {
    const procs = [...this.procs];
    for (const p of procs) p.kill('SIGKILL');
    await Promise.all(procs.map((p) => p.waitForExit().catch(() => undefined)));
    this.destroySync();
  }

  private destroySync(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    process.off('exit', this.onExit);
    for (const p of this.procs) p.kill('SIGKILL');
    this.procs.clear();
    for (const h of this.hosts) {
      // Deleting the namespace destroys its veth end, and with it the pair; the explicit
      // `link del` covers a pair whose namespace end was never moved.
      spawnSync(this.ip, ['netns', 'del', h.ns], { timeout: 15_000 });
      if (spawnSync(this.ip, ['link', 'show', h.rootIf], { timeout: 15_000 }).status === 0) spawnSync(this.ip, ['link', 'del', h.rootIf], { timeout: 15_000 });
    }
  }

  /** Names of our namespaces and links that still exist (empty after destroy()). */
  leftovers(): string[] {
    const ns = ipCommand(this.ip, ['netns', 'list']);
    const links = ipCommand(this.ip, ['-o', 'link', 'show']);
    return this.hosts.flatMap((h) => [ns.includes(h.ns) ? h.ns : '', links.includes(`${h.rootIf}@`) || links.includes(`${h.rootIf}:`) ? h.rootIf : ''].filter((x) => x !== ''));
  }
}

// ---------------------------------------------------------------------------------------------
// Fake servers: something listening on 127.0.0.1 that is not a kv-server

export interface FakeServer {
  readonly port: number;
  /** Connections accepted so far. */
  accepted: number;
  close(): Promise<void>;
}

const fakeServers = new Set<FakeServer>();

/** Listen on 127.0.0.1 (an OS-chosen port) and hand each connection to `onConnection`. */
export async function startFakeServer(onConnection: (socket: net.Socket) => void): Promise<FakeServer> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    fake.accepted++;
    sockets.add(socket);
    socket.on('error', () => socket.destroy());
    socket.once('close', () => sockets.delete(socket));
    onConnection(socket);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, HOST, () => resolve());
  });
  const fake: FakeServer = {
    port: (server.address() as net.AddressInfo).port,
    accepted: 0,
    close: () =>
      new Promise<void>((resolve) => {
        fakeServers.delete(fake);
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  fakeServers.add(fake);
  return fake;
}

/** Close every fake server still listening. */
export async function closeFakeServers(): Promise<void> {
  await Promise.all([...fakeServers].map((f) => f.close()));
}
