// npm run bench:replay — restart time with 1M keys of 100-byte values (KEYS env to change).
//
// kvstore: a WAL of KEYS SET records is written directly in the on-disk format, then a real
// kv-server is started on it; we time spawn -> port answering PING, and read the server's own
// replay_ms from INFO. Redis (if redis-server is installed): the same keys loaded through
// `redis-cli --pipe` into an appendonly server, which is then restarted on its AOF; we time
// spawn -> PING answered and read "DB loaded from append only file: X seconds" from its log.
// Runs alternate kvstore / redis, ROUNDS times; medians are printed.
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { MAGIC, RecordBatch, RecordType } from '../src/server/wal-format.js';
import { freePort, infoText, startServer, tempDir } from './cluster.js';
import { median } from './load.js';
import { have, waitForPing } from './peer.js';

const KEYS = Number(process.env.KEYS ?? 1_000_000);
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const VALUE = 'v'.repeat(100);
const key = (i: number): string => `key:${String(i).padStart(10, '0')}`;

function writeWal(file: string): void {
  const fd = fs.openSync(file, 'w');
  fs.writeSync(fd, MAGIC);
  const batch = new RecordBatch();
  const value = Buffer.from(VALUE);
  for (let i = 0; i < KEYS; i++) {
    batch.append(RecordType.Set, Buffer.from(key(i)), value);
    if (batch.records === 1000 || i === KEYS - 1) {
      batch.append(RecordType.Commit, null, null);
      fs.writeSync(fd, batch.bytes());
      batch.reset();
    }
  }
  fs.closeSync(fd);
}

async function kvRound(dir: string, port: number): Promise<{ wallMs: number; replayMs: number; rssMb: number }> {
  const t = performance.now();
  const p = await startServer(dir, port);
  const wallMs = performance.now() - t;
  const text = await infoText(port);
  const replayMs = Number(/replay_ms:(\d+)/.exec(text)?.[1] ?? NaN);
  const rssMb = Number(/used_memory_rss:(\d+)/.exec(text)?.[1] ?? NaN) / 1e6;
  p.proc.kill('SIGKILL');
  await new Promise((r) => p.proc.once('exit', r));
  return { wallMs, replayMs, rssMb };
}

async function redisPrepare(dir: string, port: number): Promise<void> {
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--appendfsync', 'no', '--save', '', '--aof-use-rdb-preamble', 'no', '--auto-aof-rewrite-percentage', '0'];
  const srv = spawn('redis-server', args, { stdio: 'ignore' });
  await waitForPing(port);
  const lines: string[] = [];
  for (let i = 0; i < KEYS; i++) lines.push(`*3\r\n$3\r\nSET\r\n$${key(i).length}\r\n${key(i)}\r\n$${VALUE.length}\r\n${VALUE}\r\n`);
  const pipe = spawnSync('redis-cli', ['-p', String(port), '--pipe'], { input: lines.join(''), maxBuffer: 1 << 26 });
  if (pipe.status !== 0) throw new Error(`redis-cli --pipe failed: ${pipe.stderr}`);
  spawnSync('redis-cli', ['-p', String(port), 'shutdown', 'nosave']);
  await new Promise((r) => srv.once('exit', r));
}

async function redisRound(dir: string, port: number): Promise<{ wallMs: number; loadMs: number; rssMb: number }> {
  const log = path.join(dir, 'redis.log');
  fs.rmSync(log, { force: true });
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--appendfsync', 'always', '--save', '', '--logfile', log, '--auto-aof-rewrite-percentage', '0'];
  const t = performance.now();
  const srv = spawn('redis-server', args, { stdio: 'ignore' });
  await waitForPing(port);
  const wallMs = performance.now() - t;
  const text = fs.readFileSync(log, 'utf8');
  const loadMs = Number(/DB loaded from (?:append only file|disk): ([\d.]+) seconds/.exec(text)?.[1] ?? NaN) * 1000;
  const info = spawnSync('redis-cli', ['-p', String(port), 'info', 'memory']).stdout.toString();
  const rssMb = Number(/used_memory_rss:(\d+)/.exec(info)?.[1] ?? NaN) / 1e6;
  srv.kill('SIGKILL');
  await new Promise((r) => srv.once('exit', r));
  return { wallMs, loadMs, rssMb };
}

const kvDir = tempDir('kv-bench-replay-');
const kvPort = await freePort();
console.log(`writing a WAL of ${KEYS} keys x ${VALUE.length} B ...`);
writeWal(path.join(kvDir, `wal_${kvPort}.log`));
console.log(`WAL size: ${(fs.statSync(path.join(kvDir, `wal_${kvPort}.log`)).size / 1e6).toFixed(1)} MB`);

const redis = have('redis-server') && have('redis-cli');
const redisDir = tempDir('kv-bench-replay-redis-');
const redisPort = await freePort();
if (redis) {
  console.log('loading the same keys into redis-server (appendonly) ...');
  await redisPrepare(redisDir, redisPort);
} else {
  console.log('redis-server/redis-cli not installed (apt-get install -y redis-server redis-tools): benchmarking kvstore alone');
}

const kv: { wallMs: number; replayMs: number; rssMb: number }[] = [];
const rd: { wallMs: number; loadMs: number; rssMb: number }[] = [];
for (let r = 0; r < ROUNDS; r++) {
  kv.push(await kvRound(kvDir, kvPort));
  console.log(`kvstore round ${r + 1}: ready in ${kv[r]!.wallMs.toFixed(0)} ms (replay ${kv[r]!.replayMs} ms), RSS ${kv[r]!.rssMb.toFixed(0)} MB`);
  if (redis) {
    rd.push(await redisRound(redisDir, redisPort));
    console.log(`redis   round ${r + 1}: ready in ${rd[r]!.wallMs.toFixed(0)} ms (load ${rd[r]!.loadMs.toFixed(0)} ms), RSS ${rd[r]!.rssMb.toFixed(0)} MB`);
  }
}
console.log('\nmedians');
console.log(`kvstore: restart ${median(kv.map((x) => x.wallMs)).toFixed(0)} ms, replay ${median(kv.map((x) => x.replayMs))} ms, RSS ${median(kv.map((x) => x.rssMb)).toFixed(0)} MB`);
if (redis) {
  const kvWall = median(kv.map((x) => x.wallMs));
  const rWall = median(rd.map((x) => x.wallMs));
  console.log(`redis:   restart ${rWall.toFixed(0)} ms, load ${median(rd.map((x) => x.loadMs)).toFixed(0)} ms, RSS ${median(rd.map((x) => x.rssMb)).toFixed(0)} MB`);
  console.log(`ratio kvstore/redis: restart ${(kvWall / rWall).toFixed(2)}x, RSS ${(median(kv.map((x) => x.rssMb)) / median(rd.map((x) => x.rssMb))).toFixed(2)}x`);
}
// Exiting stops every process started and removes the temp dirs (bench/cluster.ts).
process.exit(0);
