// Helpers for the operator-facing integration tests (INFO/NODES, the binaries' flags and logs,
// kv-client's modes, the `npm start` demo). They build on harness.ts and add what those tests
// need beyond it: processes started with our own flags and environment, a minimal RESP client,
// raw text replies (to see the `END` line), INFO parsing, a pseudo-terminal session for
// kv-client's interactive mode, and a cleanup that also reaches grandchildren (the demo's
// servers, the kv-client that `script` runs), always by pid.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { HOST, ROOT, START_TIMEOUT_MS, collectLines, freePort, type ExitStatus } from './harness.js';

export const DEMO_BIN = path.join(ROOT, 'bin', 'kv-demo');
export const PACKAGE_VERSION: string = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

// ---------------------------------------------------------------------------------------------
// Cleanup: our children and everything below them, by pid

const children = new Set<ChildProcess>();
/** Processes we did not spawn ourselves but must not leave behind, with the program they run. */
const grandchildren = new Map<number, string>();

function trackChild(proc: ChildProcess): void {
  children.add(proc);
  proc.once('exit', () => children.delete(proc));
}

/** Remember a pid started on our behalf (e.g. a demo server) so cleanupOperator() kills it. */
export function trackPid(pid: number): void {
  const cmd = commandLine(pid);
  if (cmd !== undefined) grandchildren.set(pid, cmd);
}

function commandLine(pid: number): string | undefined {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
  } catch {
    return undefined;
  }
}

/** Every descendant of `pid`, read from /proc (children first seen, then theirs). */
export function descendants(pid: number): number[] {
  const out: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    const p = queue.shift()!;
    let kids: number[] = [];
    try {
      kids = fs
        .readFileSync(`/proc/${p}/task/${p}/children`, 'utf8')
        .split(/\s+/)
        .filter(Boolean)
        .map(Number);
    } catch {
      // gone, or no such file
    }
    out.push(...kids);
    queue.push(...kids);
  }
  return out;
}

/** True once `pid` has exited (gone, or a zombie waiting to be reaped). */
export function pidGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return true;
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

/**
 * SIGKILL every process this file started, and every process those started, by pid. A pid is
 * only killed while /proc still shows the same program, so a recycled pid is left alone.
 */
export async function cleanupOperator(): Promise<void> {
  for (const proc of children) if (proc.pid !== undefined) for (const d of descendants(proc.pid)) trackPid(d);
  for (const [pid, cmd] of grandchildren) {
    if (commandLine(pid) === cmd) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  grandchildren.clear();
  await Promise.all(
    [...children].map(
      (p) =>
        new Promise<void>((resolve) => {
          if (p.exitCode !== null || p.signalCode !== null) return resolve();
          p.once('exit', () => resolve());
          try {
            process.kill(p.pid!, 'SIGKILL');
          } catch {
            resolve();
          }
        }),
    ),
  );
}

process.once('exit', () => {
  for (const pid of grandchildren.keys()) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  for (const p of children) {
    try {
      process.kill(p.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  }
});

// ---------------------------------------------------------------------------------------------
// A long-running program with our own flags, cwd and environment

export interface LaunchOptions {
  cwd: string;
  env?: NodeJS.ProcessEnv;
}

/**
 * A spawned program whose exit is recorded, cleaned up by pid after the test, with waits that
 * wake whenever it prints something (subclasses call notify()) or exits.
 */
abstract class WatchedChild {
  protected status: ExitStatus | undefined;
  private readonly exited: Promise<ExitStatus>;
  private readonly waiters: (() => void)[] = [];

  constructor(readonly proc: ChildProcess) {
    trackChild(proc);
    this.exited = new Promise((resolve) => {
      // 'close' (not 'exit'): every line the program wrote has been read by then.
      proc.once('close', (code, signal) => {
        this.status = { code, signal };
        resolve(this.status);
        this.notify();
      });
    });
  }

  get pid(): number {
    return this.proc.pid!;
  }

  /** Wake every wait: new output arrived. */
  protected notify(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /**
   * Check `find` now and after each output until it gives a value; fails with `failure`'s
   * message if the program exits first ('exited') or the time runs out ('timeout').
   */
  protected async waitUntil<T>(find: () => T | undefined, timeoutMs: number, failure: (why: 'exited' | 'timeout') => string): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = find();
      if (found !== undefined) return found;
      if (this.status !== undefined) throw new Error(failure('exited'));
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(failure('timeout'));
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** The exit status, waiting up to `timeoutMs` for it; fails with `message()` after that. */
  protected async exitWithin(timeoutMs: number, message: () => string): Promise<ExitStatus> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(message())), timeoutMs);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
}

/** A spawned program whose stdout and stderr are collected line by line. */
export class Launched extends WatchedChild {
  readonly stdout: string[] = [];
  readonly stderr: string[] = [];

  constructor(
    readonly label: string,
    command: string,
    readonly args: readonly string[],
    opts: LaunchOptions,
  ) {
    super(spawn(command, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] }));
    collectLines(this.proc.stdout!, this.stdout, () => this.notify());
    collectLines(this.proc.stderr!, this.stderr, () => this.notify());
  }

  get exitStatus(): ExitStatus | undefined {
    return this.status;
  }

  signal(sig: NodeJS.Signals): void {
    if (this.status !== undefined) return;
    try {
      process.kill(this.pid, sig);
    } catch {
      // already gone
    }
  }

  /**
   * Wait for a stdout line (at index `from` or later) matching `re`, or equal to it when it is a
   * string; fails early if the program exits first.
   */
  waitForLine(re: RegExp | string, timeoutMs: number, from = 0): Promise<{ line: string; index: number }> {
    const matches = (line: string): boolean => (typeof re === 'string' ? line === re : re.test(line));
    const find = (): { line: string; index: number } | undefined => {
      for (let i = from; i < this.stdout.length; i++) if (matches(this.stdout[i]!)) return { line: this.stdout[i]!, index: i };
      return undefined;
    };
    return this.waitUntil(find, timeoutMs, (why) =>
      why === 'exited'
        ? `${this.label} exited (code ${this.status?.code}, signal ${this.status?.signal}) before printing ${re}\n${this.tail()}`
        : `${this.label}: no line matching ${re} within ${timeoutMs} ms\n${this.tail()}`,
    );
  }

  waitForExit(timeoutMs = 20_000): Promise<ExitStatus> {
    return this.exitWithin(timeoutMs, () => `${this.label} pid ${this.pid} did not exit within ${timeoutMs} ms\n${this.tail()}`);
  }

  tail(lines = 30): string {
    return [`--- ${this.label} (pid ${this.pid}) stdout:`, ...this.stdout.slice(-lines), '--- stderr:', ...this.stderr.slice(-lines)].join('\n');
  }
}


/** `node bin/<name> ARGS...` as a long-running process. */
export function launchBin(bin: string, args: readonly string[], opts: LaunchOptions): Launched {
  return new Launched(`${path.basename(bin)} ${args.join(' ')}`, process.execPath, [bin, ...args], opts);
}

// ---------------------------------------------------------------------------------------------
// A minimal RESP client (independent of src/, so the tests check the wire, not the codec)

export type RespReply =
  | { type: 'simple'; value: string }
  | { type: 'error'; message: string }
  | { type: 'int'; value: number }
  | { type: 'bulk'; value: Buffer | null }
  | { type: 'array'; items: RespReply[] | null };

/** Parse one reply at `offset`; undefined if the bytes are not all there yet. */
function parseResp(buf: Buffer, offset: number): { reply: RespReply; end: number } | undefined {
  const crlf = buf.indexOf('\r\n', offset);
  if (crlf < 0) return undefined;
  const head = buf.toString('latin1', offset + 1, crlf);
  const next = crlf + 2;
  switch (String.fromCharCode(buf[offset]!)) {
    case '+':
      return { reply: { type: 'simple', value: head }, end: next };
    case '-':
      return { reply: { type: 'error', message: head }, end: next };
    case ':':
      return { reply: { type: 'int', value: Number(head) }, end: next };
    case '$': {
      const len = Number(head);
      if (len < 0) return { reply: { type: 'bulk', value: null }, end: next };
      if (buf.length < next + len + 2) return undefined;
      return { reply: { type: 'bulk', value: buf.subarray(next, next + len) }, end: next + len + 2 };
    }
    case '*': {
      const n = Number(head);
      if (n < 0) return { reply: { type: 'array', items: null }, end: next };
      const items: RespReply[] = [];
      let at = next;
      for (let i = 0; i < n; i++) {
        const item = parseResp(buf, at);
        if (item === undefined) return undefined;
        items.push(item.reply);
        at = item.end;
      }
      return { reply: { type: 'array', items }, end: at };
    }
    default:
      throw new Error(`not a RESP reply: ${JSON.stringify(buf.toString('latin1', offset, Math.min(buf.length, offset + 40)))}`);
  }
}

export function encodeResp(args: readonly string[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const a of args) {
    const b = Buffer.from(a, 'utf8');
    parts.push(Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n'));
  }
  return Buffer.concat(parts);
}

/** Connect, send `args` as one RESP request, read exactly one reply, disconnect. */
export function respCall(port: number, args: readonly string[], timeoutMs = 20_000): Promise<RespReply> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: HOST });
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => socket.destroy(new Error(`no RESP reply to ${args.join(' ')} from port ${port} within ${timeoutMs} ms`)), timeoutMs);
    socket.once('connect', () => socket.write(encodeResp(args)));
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      try {
        const parsed = parseResp(buf, 0);
        if (parsed === undefined) return;
        clearTimeout(timer);
        socket.destroy();
        if (parsed.end !== buf.length) reject(new Error(`bytes after the reply to ${args.join(' ')}: ${JSON.stringify(buf.subarray(parsed.end).toString('latin1'))}`));
        else resolve(parsed.reply);
      } catch (err) {
        socket.destroy(err as Error);
      }
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.once('close', () => {
      clearTimeout(timer);
      reject(new Error(`port ${port} closed the connection before replying to ${args.join(' ')}`));
    });
  });
}

/** The text of a RESP bulk-string reply (fails on anything else). */
export async function respBulkText(port: number, args: readonly string[]): Promise<string> {
  const reply = await respCall(port, args);
  if (reply.type !== 'bulk' || reply.value === null) throw new Error(`${args.join(' ')} on port ${port}: expected a bulk string, got ${JSON.stringify(reply)}`);
  return reply.value.toString('utf8');
}

// ---------------------------------------------------------------------------------------------
// Raw text replies

/**
 * Send one text line and return the raw bytes of a multi-line reply, up to and including its
 * `END` line (or a lone error line). Unlike harness TextClient, this keeps the `END`.
 */
export function textBlock(port: number, line: string, timeoutMs = 20_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: HOST });
    let text = '';
    const timer = setTimeout(() => socket.destroy(new Error(`no complete reply to ${line} from port ${port} within ${timeoutMs} ms (got ${JSON.stringify(text)})`)), timeoutMs);
    socket.setEncoding('utf8');
    socket.once('connect', () => socket.write(`${line}\n`));
    socket.on('data', (chunk: string) => {
      text += chunk;
      if (/(^|\n)END\n$/.test(text) || /^(ERR|NOAUTH|WRONGPASS)\b[^\n]*\n$/.test(text)) {
        clearTimeout(timer);
        socket.destroy();
        resolve(text);
      }
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.once('close', () => {
      clearTimeout(timer);
      reject(new Error(`port ${port} closed the connection mid-reply to ${line} (got ${JSON.stringify(text)})`));
    });
  });
}

// ---------------------------------------------------------------------------------------------
// INFO

export type InfoSections = Map<string, Map<string, string>>;

/**
 * Parse Redis-style INFO text: `# Section` headers, `key:value` lines, blank lines between
 * sections. Throws on any other line, so a malformed reply fails the test that parses it.
 */
export function parseInfo(text: string): InfoSections {
  const sections: InfoSections = new Map();
  let current: Map<string, string> | undefined;
  for (const line of text.split(/\r?\n/)) {
    if (line === '') continue;
    const header = /^# (\S.*)$/.exec(line);
    if (header) {
      if (sections.has(header[1]!)) throw new Error(`INFO section ${header[1]} appears twice`);
      current = new Map();
      sections.set(header[1]!, current);
      continue;
    }
    const field = /^([A-Za-z0-9_]+):(.*)$/.exec(line);
    if (!field) throw new Error(`INFO line is neither '# Section' nor 'key:value': ${JSON.stringify(line)}`);
    if (current === undefined) throw new Error(`INFO field before any section header: ${JSON.stringify(line)}`);
    current.set(field[1]!, field[2]!);
  }
  return sections;
}

/** One field of parsed INFO, wherever it is; fails clearly if missing. */
export function infoField(info: InfoSections, key: string): string {
  for (const fields of info.values()) {
    const v = fields.get(key);
    if (v !== undefined) return v;
  }
  throw new Error(`INFO has no field '${key}' (sections: ${[...info.keys()].join(', ')})`);
}

/** INFO over RESP, parsed. */
export async function info(port: number, section?: string): Promise<InfoSections> {
  return parseInfo(await respBulkText(port, section === undefined ? ['INFO'] : ['INFO', section]));
}

/** The process id a server or proxy reports in `INFO server`. */
export async function reportedPid(port: number): Promise<number> {
  return Number(infoField(await info(port, 'server'), 'process_id'));
}

// ---------------------------------------------------------------------------------------------
// kv-client on a pseudo-terminal, through util-linux `script`

const ANSI = /\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]|\x1b[=>]/g;

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * A program run with a TTY: `script -qfec "<command>" /dev/null`. We write keystrokes to
 * script's stdin and read what the terminal shows from its stdout (escape sequences removed).
 */
export class PtySession extends WatchedChild {
  private raw = '';
  /** Offset in screen() from which waitFor() looks; moved by mark(). */
  private from = 0;

  constructor(scriptPath: string, argv: readonly string[], opts: LaunchOptions) {
    // A fixed window size: with none, the pty reports 0 columns and line editing redraws oddly.
    const command = `stty cols 200 rows 50 2>/dev/null; exec ${argv.map(shellQuote).join(' ')}`;
    super(spawn(scriptPath, ['-qfec', command, '/dev/null'], { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] }));
    this.proc.stdin!.on('error', () => {}); // the program may be gone when we type
    this.proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
      this.raw += d;
      this.notify();
    });
    this.proc.stderr!.setEncoding('utf8').on('data', (d: string) => {
      this.raw += d;
      this.notify();
    });
  }

  /** What the terminal showed so far, without escape sequences and carriage returns. */
  screen(): string {
    return this.raw.replace(ANSI, '').replace(/\r/g, '');
  }

  /** Make later waitFor() calls look only at output from now on. */
  mark(): void {
    this.from = this.screen().length;
  }

  /** Send keystrokes (use '\r' for Enter, '\x04' for Ctrl-D, '\x1b[A' for the up arrow). */
  type(keys: string): void {
    this.proc.stdin!.write(keys);
  }

  /** Wait until the output since the last mark() matches `re`; returns the match. */
  waitFor(re: RegExp, timeoutMs = 20_000): Promise<RegExpExecArray> {
    return this.waitUntil(
      () => re.exec(this.screen().slice(this.from)) ?? undefined,
      timeoutMs,
      (why) =>
        (why === 'exited' ? `the terminal program exited (code ${this.status?.code}) before showing ${re}` : `the terminal did not show ${re} within ${timeoutMs} ms`) +
        `\n--- screen since mark:\n${this.screen().slice(this.from)}`,
    );
  }

  /** Type a line at the prompt and wait for the output up to the next prompt. */
  async command(line: string, timeoutMs = 20_000): Promise<string> {
    this.mark();
    this.type(`${line}\r`);
    // The echo of the line, the reply lines, then a fresh prompt.
    const m = await this.waitFor(/\n([\s\S]*?)\n> $/, timeoutMs);
    return m[1]!;
  }

  waitForExit(timeoutMs = 20_000): Promise<ExitStatus> {
    return this.exitWithin(timeoutMs, () => `the terminal program did not exit within ${timeoutMs} ms\n${this.screen()}`);
  }
}

// ---------------------------------------------------------------------------------------------
// The demo cluster (`npm start`)

export interface DemoRun {
  demo: Launched;
  proxyPort: number;
  serverPorts: number[];
}

/** Three distinct free ports for the demo's servers plus one for its proxy. */
export async function demoPorts(): Promise<{ proxyPort: number; serverPorts: number[] }> {
  const ports = new Set<number>();
  while (ports.size < 4) ports.add(await freePort());
  const [proxyPort, ...serverPorts] = [...ports];
  return { proxyPort: proxyPort!, serverPorts };
}

/**
 * `node bin/kv-demo --dir DIR --proxy-port P --server-ports A,B,C` in `cwd`, waiting for its
 * "Demo cluster ready" line. A port another test took between freePort() and the bind makes
 * the demo exit; then it is tried again until the deadline: on new free ports, or on the same
 * `ports` when they are given (a restart must keep its ports: the ring names nodes by them).
 */
export async function startDemo(dir: string, cwd: string, ports?: { proxyPort: number; serverPorts: number[] }): Promise<DemoRun> {
  const deadline = Date.now() + 3 * START_TIMEOUT_MS;
  for (let attempt = 1; ; attempt++) {
    const chosen = ports ?? (await demoPorts());
    const demo = launchBin(DEMO_BIN, ['--dir', dir, '--proxy-port', String(chosen.proxyPort), '--server-ports', chosen.serverPorts.join(',')], { cwd });
    try {
      await demo.waitForLine(/^Demo cluster ready\b/, Math.max(5000, deadline - Date.now()));
      return { demo, ...chosen };
    } catch (err) {
      const inUse = /already in use/.test(demo.stderr.join('\n'));
      if (demo.exitStatus === undefined) {
        demo.signal('SIGINT'); // let it stop its children itself
        await demo.waitForExit().catch(() => demo.signal('SIGKILL'));
      }
      if (!inUse || Date.now() >= deadline) throw err;
      await new Promise((r) => setTimeout(r, 100 * attempt)); // backoff before the retry
    }
  }
}

/** The flag names a binary defines: every `.option('--name` in its source file. */
export function flagsDefinedIn(source: string): string[] {
  return [...source.matchAll(/\.option\(\s*['"`](?:-\w, )?(--[a-z0-9-]+)/g)].map((m) => m[1]!);
}
