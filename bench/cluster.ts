// Spawning real kvstore processes for benchmarks: free ports, banners, cleanup by pid.
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import fs from 'node:fs';
import os from 'node:os';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { ProxyConnection } from '../src/client/connection.js';

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../bin');

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

export interface Proc {
  name: string;
  port: number;
  proc: ChildProcess;
}

const started: Proc[] = [];

const tempDirs: string[] = [];

/** A fresh directory under the OS temp dir, removed when the bench exits (a 1M-key run leaves ~190 MB of WALs). */
export function tempDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}

const exitHooks: (() => void)[] = [];

/** Run `hook` when the bench exits, before its processes are stopped and its temp dirs removed. */
export function atExit(hook: () => void): void {
  exitHooks.push(hook);
}

/** BENCH_PROFILE_DIR=dir: every process writes a V8 CPU profile there when the bench ends. */
const PROFILE_DIR = process.env.BENCH_PROFILE_DIR;

export async function launch(name: string, bin: string, args: string[], banner: RegExp, port: number): Promise<Proc> {
  const profile = PROFILE_DIR === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${PROFILE_DIR}`, `--cpu-prof-name=${name.replace(':', '-')}.cpuprofile`];
  const proc = spawn(process.execPath, [...profile, path.join(BIN, bin), ...args, '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const p: Proc = { name, port, proc };
  started.push(p);
  await new Promise<void>((resolve, reject) => {
    const rl = readline.createInterface({ input: proc.stdout! });
    rl.on('line', (line) => {
      if (banner.test(line)) resolve();
    });
    proc.once('exit', (code) => reject(new Error(`${name} exited early (${code})`)));
  });
  return p;
}

export async function startServer(dir: string, port?: number, extra: string[] = []): Promise<Proc> {
  const p = port ?? (await freePort());
  return launch(`server:${p}`, 'kv-server', [String(p), '--dir', dir, ...extra], /^--- Persistent Server Port /, p);
}

export async function startProxy(dir: string, port?: number, extra: string[] = []): Promise<Proc> {
  const p = port ?? (await freePort());
  return launch(`proxy:${p}`, 'kv-proxy', ['--port', String(p), '--dir', dir, ...extra], /^--- KV Proxy\/Gateway running on Port /, p);
}

/** `INFO [section]` of a kvstore process on `port`, as text ('' if the reply is not a bulk string). */
export async function infoText(port: number, section?: string, timeoutMs = 0): Promise<string> {
  const conn = new ProxyConnection('127.0.0.1', port, timeoutMs);
  try {
    const info = await conn.send(section === undefined ? ['INFO'] : ['INFO', section]);
    return info.type === 'bulk' && info.value ? info.value.toString() : '';
  } finally {
    conn.close();
  }
}

/** CPU time (user + system) a process has used so far, in ms; undefined where /proc is missing. */
export function cpuMs(p: Proc): number | undefined {
  return p.proc.pid === undefined ? undefined : pidCpuMs(p.proc.pid);
}

/** cpuMs() for any process, e.g. one of the reference peer's. */
export function pidCpuMs(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    // Fields after the command name (which may contain spaces) start at ") ".
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100; // utime, stime in 1/100 s
  } catch {
    return undefined;
  }
}

/** The whole machine's CPU time so far (/proc/stat, all cores), busy and in total, in ticks. */
export interface MachineCpu {
  busy: number;
  total: number;
}

export function machineCpu(): MachineCpu | undefined {
  try {
    const line = fs.readFileSync('/proc/stat', 'latin1').split('\n', 1)[0]!;
    const ticks = line.trim().split(/\s+/).slice(1, 9).map(Number); // user nice system idle iowait irq softirq steal
    const total = ticks.reduce((a, b) => a + b, 0);
    return { busy: total - ticks[3]! - ticks[4]!, total };
  } catch {
    return undefined;
  }
}

/** Share of the machine's CPU that was busy between two snapshots, as "NN%" ("?" without /proc). */
export function machineBusy(before: MachineCpu | undefined, after: MachineCpu | undefined): string {
  if (before === undefined || after === undefined || after.total === before.total) return '?';
  return `${Math.round((100 * (after.busy - before.busy)) / (after.total - before.total))}%`;
}

export function stopAll(): void {
  // A profiled process must exit normally to write its profile.
  for (const p of started) if (p.proc.exitCode === null && p.proc.signalCode === null) p.proc.kill(PROFILE_DIR === undefined ? 'SIGKILL' : 'SIGINT');
  started.length = 0;
}

process.on('exit', () => {
  for (const hook of exitHooks.splice(0)) hook();
  stopAll();
  for (const dir of tempDirs.splice(0)) {
    try {
      fs.rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
    } catch (err) {
      console.error(`could not remove ${dir}: ${(err as Error).message}`);
    }
  }
});
// Ctrl-C, or `timeout` sending SIGTERM: exit through the 'exit' handler above, so the hooks run
// (the peer is stopped) and nothing started here is left behind.
for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
  process.on(signal, () => {
    stopAll();
    process.exit(code);
  });
}
