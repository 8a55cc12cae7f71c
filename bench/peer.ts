// The reference peer (twemproxy in front of two redis-servers with appendfsync always, started
// by ../shared/peers/twemproxy-redis.sh) and redis-benchmark, shared by the benches that compare
// kvstore with it.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const PEER = process.env.PEER_SCRIPT ?? path.resolve(here, '../../shared/peers/twemproxy-redis.sh');
/** twemproxy's port, and the two redis-servers behind it (fixed by the peer script). */
export const PEER_PORT = 22121;
export const PEER_REDIS_PORTS = [7101, 7102] as const;

export function have(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

/** Are the peer's programs and script here? */
export function peerAvailable(): boolean {
  return have('redis-server') && have('nutcracker') && fs.existsSync(PEER);
}

/** Start the peer in `dir` (stopping one left there first). */
export function startPeer(dir: string): void {
  spawnSync('bash', [PEER, 'stop', dir]);
  const started = spawnSync('bash', [PEER, 'start', dir], { encoding: 'utf8' });
  if (started.status !== 0) throw new Error(`peer failed to start: ${started.stderr}`);
}

/** The pids of the peer started in `dir`: its twemproxy and its two redis-servers. */
export function peerPids(dir: string): { twemproxy: number | undefined; redis: number[] } {
  const read = (file: string): number | undefined => {
    try {
      return Number(fs.readFileSync(path.join(dir, file), 'utf8').trim());
    } catch {
      return undefined;
    }
  };
  const redis = PEER_REDIS_PORTS.map((p) => read(`redis-${p}.pid`)).filter((p): p is number => p !== undefined);
  return { twemproxy: read('nutcracker.pid'), redis };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Wait (blocking, up to `ms`) until none of `pids` is alive. */
export function waitGone(pids: number[], ms = 5000): void {
  const pause = new Int32Array(new SharedArrayBuffer(4));
  const deadline = performance.now() + ms;
  while (pids.some(alive) && performance.now() < deadline) Atomics.wait(pause, 0, 0, 20);
}

/**
 * The peer script's stop only signals its processes; wait (up to 5 s) until they are gone, so
 * that their last log lines are written before the directory is removed.
 */
export function stopPeer(dir: string): void {
  const { twemproxy, redis } = peerPids(dir);
  spawnSync('bash', [PEER, 'stop', dir]);
  waitGone([...redis, ...(twemproxy === undefined ? [] : [twemproxy])]);
}

export interface Run {
  rps: number;
  p50: number;
  p99: number;
}

/** One redis-benchmark test; returns requests/s and latency percentiles (ms). */
export function redisBenchmark(port: number, test: 'set' | 'get', extra: string[], n: number): Run {
  const args = ['-p', String(port), '-t', test, '-r', '100000', '-n', String(n), '--csv', ...extra];
  const out = spawnSync('redis-benchmark', args, { encoding: 'utf8', timeout: 600_000 });
  const line = out.stdout.split('\n').find((l) => l.startsWith(`"${test.toUpperCase()}"`));
  if (!line) throw new Error(`redis-benchmark ${args.join(' ')} gave no result:\n${out.stdout}\n${out.stderr}`);
  const f = line.split(',').map((x) => Number(x.replace(/"/g, '')));
  return { rps: f[1]!, p50: f[4]!, p99: f[6]! };
}

/**
 * Resolves once something on `port` answers PING with PONG (up to 120 s). The PING is RESP, not
 * inline: twemproxy parses only RESP arrays.
 */
export async function waitForPing(port: number): Promise<void> {
  for (const until = Date.now() + 120_000; Date.now() < until; ) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('error', () => resolve(false));
      s.once('close', () => resolve(false));
      s.once('connect', () => s.write('*1\r\n$4\r\nPING\r\n'));
      s.once('data', (d) => {
        s.destroy();
        resolve(d.toString().includes('PONG'));
      });
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`port ${port} never answered`);
}
