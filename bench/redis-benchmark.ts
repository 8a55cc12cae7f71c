// npm run bench — kvstore next to its users' alternative, twemproxy + Redis (appendfsync always),
// measured side by side in one run with redis-benchmark. Prints a table of ratios (docs/performance.md).
//
//  1. SET and GET through the proxy vs through twemproxy, plain (-c 50) and pipelined (-P 16),
//     alternating A B A B (ROUNDS times) and taking medians, since this machine is shared and noisy.
//  2. Durable SET/s at 50 clients directly against one kv-server, as a multiple of the disk's
//     write+fdatasync rate measured here in the same run; one of the peer's redis-servers
//     (appendfsync always) the same way, for reference.
//  3. RSS with KEYS keys of 100 bytes, kv-server vs redis-server: right after the load, and
//     SETTLE_MS (12 s) later, once kv-server has given back what the load left spare.
//  4. Restart time with those keys, kv-server vs redis-server (AOF).
//  5. Proxy overhead at low load: p50 of GET with one client, via the proxy vs directly.
// Where redis-benchmark is missing nothing can be measured; where the peer (redis-server,
// nutcracker) is missing, kvstore is measured alone and the script says so.
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { atExit, freePort, infoText, startProxy, startServer, tempDir, type Proc } from './cluster.js';
import { median, pipelined } from './load.js';
import { have, PEER, PEER_PORT, PEER_REDIS_PORTS, peerAvailable, redisBenchmark as benchmark, startPeer, stopPeer, waitForPing, type Run } from './peer.js';
import { ProxyConnection } from '../src/client/connection.js';

const ROUNDS = Number(process.env.ROUNDS ?? 2);
const REQUESTS = Number(process.env.REQUESTS ?? 200_000);
const KEYS = Number(process.env.KEYS ?? 1_000_000);

/** redis-benchmark with REQUESTS requests unless told otherwise. */
const redisBenchmark = (port: number, test: 'set' | 'get', extra: string[], n = REQUESTS): Run => benchmark(port, test, extra, n);

async function diskWriteFsyncRate(dir: string, ms = 2000): Promise<number> {
  const file = path.join(dir, 'fsync-probe');
  const fd = fs.openSync(file, 'w');
  const record = Buffer.alloc(128, 1);
  let n = 0;
  const until = performance.now() + ms;
  while (performance.now() < until) {
    fs.writeSync(fd, record);
    fs.fdatasyncSync(fd);
    n++;
  }
  fs.closeSync(fd);
  fs.rmSync(file);
  return n / (ms / 1000);
}

async function rssOf(port: number): Promise<number> {
  const text = await infoText(port, 'memory');
  return Number(/used_memory_rss:(\d+)/.exec(text)?.[1] ?? NaN) / 1e6;
}

/**
 * RSS right after a load, and again once it has settled (kv-server gives back the spare room of
 * a bulk load once it has been quiet for a few seconds; redis is given the same wait).
 */
const SETTLE_MS = Number(process.env.SETTLE_MS ?? 12_000);
async function rssAfterLoad(port: number): Promise<{ now: number; settled: number }> {
  const now = await rssOf(port);
  await new Promise((r) => setTimeout(r, SETTLE_MS));
  return { now, settled: await rssOf(port) };
}

function* loadRequests(): Generator<string[]> {
  const value = 'v'.repeat(100);
  for (let i = 0; i < KEYS; i += 100) {
    const args = ['MSET'];
    for (let k = i; k < Math.min(KEYS, i + 100); k++) args.push(`key:${String(k).padStart(10, '0')}`, value);
    yield args;
  }
}

const rows: [string, string, string, string, string][] = [];
const row = (measure: string, kv: string, peer: string, ratio: string, target: string): void => {
  rows.push([measure, kv, peer, ratio, target]);
  console.log(`  ${measure}: kvstore ${kv} | peer ${peer} | ratio ${ratio} (target ${target})`);
};

if (!have('redis-benchmark')) {
  console.error('redis-benchmark is not installed (apt-get install -y redis-tools); nothing to measure.');
  process.exit(1);
}
const withPeer = peerAvailable();
if (!withPeer) console.log(`the reference peer is not available (needs redis-server, nutcracker and ${PEER}): benchmarking kvstore alone`);

const dir = tempDir('kv-bench-');
const servers: Proc[] = [await startServer(dir), await startServer(dir)];
const proxy = await startProxy(dir);
const admin = new ProxyConnection('127.0.0.1', proxy.port);
for (const s of servers) await admin.send(['ADD', `127.0.0.1:${s.port}`]);
admin.close();
const peerDir = tempDir('kv-bench-peer-');
if (withPeer) startPeer(peerDir);
atExit(() => {
  if (withPeer) stopPeer(peerDir);
});

console.log(`\n1. redis-benchmark -t set,get -r 100000 -c 50 -n ${REQUESTS}, plain and -P 16, alternating A B (${ROUNDS} rounds)`);
for (const [label, extra] of [
  ['plain', ['-c', '50']],
  ['-P 16', ['-c', '50', '-P', '16']],
] as const) {
  for (const test of ['set', 'get'] as const) {
    const kv: Run[] = [];
    const peer: Run[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      kv.push(redisBenchmark(proxy.port, test, [...extra]));
      if (withPeer) peer.push(redisBenchmark(PEER_PORT, test, [...extra]));
    }
    const k = median(kv.map((x) => x.rps));
    const p = median(peer.map((x) => x.rps));
    row(`${test.toUpperCase()} ${label} (req/s)`, k.toFixed(0), withPeer ? p.toFixed(0) : 'n/a', withPeer ? `${(k / p).toFixed(2)}x` : 'n/a', '>= 1.0x (min 0.7x)');
    row(`${test.toUpperCase()} ${label} p50/p99 (ms)`, `${median(kv.map((x) => x.p50)).toFixed(3)}/${median(kv.map((x) => x.p99)).toFixed(3)}`, withPeer ? `${median(peer.map((x) => x.p50)).toFixed(3)}/${median(peer.map((x) => x.p99)).toFixed(3)}` : 'n/a', '', 'report');
  }
}

console.log(`\n2. durable SET/s at 50 clients on one kv-server vs the disk write+fdatasync rate, and one of the peer's redis-servers (appendfsync always) for reference, alternating (${ROUNDS} rounds)`);
const diskRate = await diskWriteFsyncRate(dir);
const kvDurable: number[] = [];
const redisDurable: number[] = [];
for (let r = 0; r < ROUNDS; r++) {
  kvDurable.push(redisBenchmark(servers[0]!.port, 'set', ['-c', '50'], Math.min(REQUESTS, 100_000)).rps);
  if (withPeer) redisDurable.push(redisBenchmark(PEER_REDIS_PORTS[0], 'set', ['-c', '50'], Math.min(REQUESTS, 100_000)).rps);
}
const perDisk = (rps: number): string => `${(rps / diskRate).toFixed(1)}x`;
const disk = `disk ${diskRate.toFixed(0)} write+fsync/s`;
row('durable SET/s, 50 clients, one server', median(kvDurable).toFixed(0), disk, perDisk(median(kvDurable)), '>= 10x the disk rate');
if (withPeer) row('peer: durable SET/s, 50 clients, one redis-server', median(redisDurable).toFixed(0), disk, perDisk(median(redisDurable)), 'reference');

console.log(`\n3-4. ${KEYS} keys x 100 B: RSS and restart time, kv-server vs redis-server`);
const memDir = tempDir('kv-bench-mem-');
const kvMem = await startServer(memDir);
const loadErrors = await pipelined(kvMem.port, loadRequests(), 64);
if (loadErrors > 0) console.log(`  (${loadErrors} errors while loading kvstore)`);
const kvRss = await rssAfterLoad(kvMem.port);
kvMem.proc.kill('SIGKILL');
await new Promise((r) => kvMem.proc.once('exit', r));
let t = performance.now();
const kvAgain = await startServer(memDir, kvMem.port);
const kvRestart = performance.now() - t;
const kvRssAfter = await rssAfterLoad(kvAgain.port);
kvAgain.proc.kill('SIGKILL');

let redisRss = { now: NaN, settled: NaN };
let redisRestart = NaN;
if (have('redis-server')) {
  const rport = await freePort();
  const rdir = tempDir('kv-bench-redis-');
  const rargs = ['--port', String(rport), '--bind', '127.0.0.1', '--dir', rdir, '--appendonly', 'yes', '--appendfsync', 'always', '--save', '', '--auto-aof-rewrite-percentage', '0'];
  const r1 = spawn('redis-server', rargs, { stdio: 'ignore' });
  await waitForPing(rport);
  await pipelined(rport, loadRequests(), 64);
  redisRss = await rssAfterLoad(rport);
  r1.kill('SIGKILL');
  await new Promise((r) => r1.once('exit', r));
  t = performance.now();
  const r2 = spawn('redis-server', rargs, { stdio: 'ignore' });
  await waitForPing(rport);
  redisRestart = performance.now() - t;
  r2.kill('SIGKILL');
  await new Promise((r) => r2.once('exit', r));
  fs.rmSync(rdir, { recursive: true, force: true });
}
const settledFor = `${(SETTLE_MS / 1000).toFixed(0)} s`;
/** The peer's column and the ratio column for kvstore's `kv` against redis's `peer` (NaN: no redis). */
const againstRedis = (kv: number, peer: number): [string, string] => (Number.isNaN(peer) ? ['n/a', 'n/a'] : [peer.toFixed(0), `${(kv / peer).toFixed(2)}x`]);
row(`RSS with ${KEYS} keys, ${settledFor} after the load (MB)`, `${kvRss.settled.toFixed(0)} (after restart ${kvRssAfter.settled.toFixed(0)})`, ...againstRedis(kvRss.settled, redisRss.settled), '<= 1.2x redis');
row(`RSS right after the load (MB)`, `${kvRss.now.toFixed(0)} (after restart ${kvRssAfter.now.toFixed(0)})`, ...againstRedis(kvRss.now, redisRss.now), 'report');
row(`restart with ${KEYS} keys (ms, spawn to PING)`, kvRestart.toFixed(0), ...againstRedis(kvRestart, redisRestart), "<= redis's load time");

console.log('\n5. proxy overhead at low load: GET p50 with 1 client, via the proxy vs directly');
const viaProxy: number[] = [];
const directly: number[] = [];
for (let r = 0; r < ROUNDS; r++) {
  viaProxy.push(redisBenchmark(proxy.port, 'get', ['-c', '1'], 20_000).p50);
  directly.push(redisBenchmark(servers[0]!.port, 'get', ['-c', '1'], 20_000).p50);
}
const overheadUs = (median(viaProxy) - median(directly)) * 1000;
row('GET p50, 1 client (ms)', `${median(viaProxy).toFixed(3)} via proxy`, `${median(directly).toFixed(3)} direct`, `+${overheadUs.toFixed(0)} us`, '<= +100 us');
if (withPeer) {
  // The same measure for the peer, in the same minute: what a C proxy adds on this machine.
  const viaTwemproxy: number[] = [];
  const redisDirect: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    viaTwemproxy.push(redisBenchmark(PEER_PORT, 'get', ['-c', '1'], 20_000).p50);
    redisDirect.push(redisBenchmark(PEER_REDIS_PORTS[0], 'get', ['-c', '1'], 20_000).p50);
  }
  const peerUs = (median(viaTwemproxy) - median(redisDirect)) * 1000;
  row('peer: GET p50, 1 client (ms)', `${median(viaTwemproxy).toFixed(3)} via twemproxy`, `${median(redisDirect).toFixed(3)} redis direct`, `+${peerUs.toFixed(0)} us`, 'reference');
}

console.log('\n| measure | kvstore | peer / reference | ratio | target |\n|---|---|---|---|---|');
for (const r of rows) console.log(`| ${r.join(' | ')} |`);
// Exiting stops every process started and removes the temp dirs (bench/cluster.ts).
process.exit(0);
