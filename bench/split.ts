// npm run bench:split — which side of the gap to the peer is the proxy's and which the servers'.
// The same redis-benchmark load (-c 50 -r 100000, plain and -P 16) through all four pairings of
// a proxy and two storage servers, in turn within each round (ROUNDS, medians reported):
//
//   twemproxy -> redis-server   the peer itself
//   twemproxy -> kv-server      kvstore's servers behind the peer's proxy
//   kv-proxy  -> redis-server   kvstore's proxy in front of the peer's servers
//   kv-proxy  -> kv-server      kvstore
//
// and, for reference, straight to one redis-server and to one kv-server (no proxy), with the
// CPU that the proxy process and the servers used per request (/proc).
// kv-proxy only ADDs nodes that answer NODEINFO as kv-servers; for the redis pairing its ring
// state file is written before it starts, naming the two redis-servers, and it routes SET and
// GET to them as to kv-servers (its connection setup, CLIENT NO-EVICT, is a Redis command too).
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { atExit, freePort, pidCpuMs, startProxy, startServer, tempDir } from './cluster.js';
import { median } from './load.js';
import { have, PEER, PEER_PORT, PEER_REDIS_PORTS, peerAvailable, peerPids, redisBenchmark, startPeer, stopPeer, waitForPing, waitGone } from './peer.js';
import { ProxyConnection } from '../src/client/connection.js';
import { DEFAULT_VNODES } from '../src/common/ring.js';
import { StateFile, emptyState } from '../src/proxy/ring-state.js';

const ROUNDS = Number(process.env.ROUNDS ?? 3);
const REQUESTS = Number(process.env.REQUESTS ?? 100_000);

if (!have('redis-benchmark') || !peerAvailable()) {
  console.error(`bench:split needs redis-benchmark, redis-server, nutcracker and ${PEER} (apt-get install -y redis-server redis-tools nutcracker)`);
  process.exit(1);
}

const dir = tempDir('kv-bench-split-');
const peerDir = tempDir('kv-bench-peer-');
startPeer(peerDir);
atExit(() => stopPeer(peerDir));
const peer = peerPids(peerDir);

// kvstore: two kv-servers and a kv-proxy.
const servers = [await startServer(dir), await startServer(dir)];
const kvProxy = await startProxy(dir);
const admin = new ProxyConnection('127.0.0.1', kvProxy.port);
for (const s of servers) await admin.send(['ADD', `127.0.0.1:${s.port}`]);
admin.close();

// kv-proxy in front of the peer's redis-servers.
const redisRingDir = path.join(dir, 'kv-proxy-to-redis');
fs.mkdirSync(redisRingDir);
const kvProxyToRedisPort = await freePort();
StateFile.forPort(redisRingDir, kvProxyToRedisPort).save({ ...emptyState(DEFAULT_VNODES), members: PEER_REDIS_PORTS.map((p) => `127.0.0.1:${p}`) });
const kvProxyToRedis = await startProxy(redisRingDir, kvProxyToRedisPort);

// twemproxy in front of the kv-servers, configured as the peer's (ketama, fnv1a_64).
const twemToKvPort = await freePort();
const config = path.join(dir, 'nutcracker.yml');
fs.writeFileSync(
  config,
  ['kv:', `  listen: 127.0.0.1:${twemToKvPort}`, '  hash: fnv1a_64', '  distribution: ketama', '  redis: true', '  auto_eject_hosts: false', '  servers:', ...servers.map((s) => `   - 127.0.0.1:${s.port}:1`), ''].join('\n'),
);
const twemToKv = spawn('nutcracker', ['-c', config, '-s', String(await freePort()), '-a', '127.0.0.1', '-o', path.join(dir, 'nutcracker.log')], { stdio: 'ignore' });
atExit(() => {
  twemToKv.kill('SIGKILL');
  if (twemToKv.pid !== undefined) waitGone([twemToKv.pid]);
});
await waitForPing(twemToKvPort);

interface Pairing {
  label: string;
  port: number;
  proxyPid: number | undefined;
  serverPids: (number | undefined)[];
}
const kvServerPids = servers.map((s) => s.proc.pid);
const pairings: Pairing[] = [
  { label: 'twemproxy -> redis-server (the peer)', port: PEER_PORT, proxyPid: peer.twemproxy, serverPids: peer.redis },
  { label: 'twemproxy -> kv-server', port: twemToKvPort, proxyPid: twemToKv.pid, serverPids: kvServerPids },
  { label: 'kv-proxy -> redis-server', port: kvProxyToRedis.port, proxyPid: kvProxyToRedis.proc.pid, serverPids: peer.redis },
  { label: 'kv-proxy -> kv-server (kvstore)', port: kvProxy.port, proxyPid: kvProxy.proc.pid, serverPids: kvServerPids },
  { label: 'one redis-server, no proxy', port: PEER_REDIS_PORTS[0], proxyPid: undefined, serverPids: peer.redis.slice(0, 1) },
  { label: 'one kv-server, no proxy', port: servers[0]!.port, proxyPid: undefined, serverPids: kvServerPids.slice(0, 1) },
];

/** CPU (ms) used so far by each of `pids`, summed; NaN if one cannot be read. */
function cpuOf(pids: (number | undefined)[]): number {
  return pids.reduce<number>((sum, pid) => sum + ((pid === undefined ? undefined : pidCpuMs(pid)) ?? NaN), 0);
}

interface Sample {
  rps: number;
  proxyUs: number;
  serversUs: number;
}

// One short unmeasured pass through every pairing first, so that no pairing's first measured
// run is also its processes' first traffic (a cold JIT, a fresh AOF or WAL).
for (const p of pairings) for (const test of ['set', 'get'] as const) redisBenchmark(p.port, test, ['-c', '50'], Math.ceil(REQUESTS / 10));

console.log(`redis-benchmark -c 50 -r 100000 -n ${REQUESTS}, each pairing in turn, ${ROUNDS} rounds; CPU per request from /proc\n`);
const lines: string[] = [];
for (const [mode, extra] of [
  ['plain', ['-c', '50']],
  ['-P 16', ['-c', '50', '-P', '16']],
] as const) {
  for (const test of ['set', 'get'] as const) {
    const samples = pairings.map((): Sample[] => []);
    for (let r = 0; r < ROUNDS; r++) {
      // Start each round with a different pairing, so none always runs first.
      for (let k = 0; k < pairings.length; k++) {
        const i = (k + r) % pairings.length;
        const p = pairings[i]!;
        const proxyBefore = cpuOf([p.proxyPid]); // NaN without a proxy
        const serversBefore = cpuOf(p.serverPids);
        const run = redisBenchmark(p.port, test, [...extra], REQUESTS);
        samples[i]!.push({
          rps: run.rps,
          proxyUs: ((cpuOf([p.proxyPid]) - proxyBefore) * 1000) / REQUESTS,
          serversUs: ((cpuOf(p.serverPids) - serversBefore) * 1000) / REQUESTS,
        });
      }
    }
    const peerRps = median(samples[0]!.map((s) => s.rps));
    for (const [i, p] of pairings.entries()) {
      const rps = median(samples[i]!.map((s) => s.rps));
      const line = `| ${test.toUpperCase()} ${mode} | ${p.label} | ${rps.toFixed(0)} | ${(rps / peerRps).toFixed(2)}x | ${p.proxyPid === undefined ? '-' : median(samples[i]!.map((s) => s.proxyUs)).toFixed(1)} | ${median(samples[i]!.map((s) => s.serversUs)).toFixed(1)} |`;
      lines.push(line);
      console.log(line);
    }
  }
}

console.log('\n| test | proxy -> servers | req/s | vs the peer | proxy CPU per request (µs) | servers\' CPU per request (µs) |\n|---|---|---|---|---|---|');
for (const l of lines) console.log(l);
// Exiting stops every process started and removes the temp dirs (bench/cluster.ts).
process.exit(0);
