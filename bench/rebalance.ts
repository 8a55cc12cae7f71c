// npm run bench:rebalance — how fast ADD and REMOVE move data, and what they cost live traffic.
//
// 3 servers + proxy, 1M keys with 100-byte values (KEYS env to change; CLIENTS, BASELINE_MS,
// MIGRATE_BATCH, MIGRATE_RATE too), then:
//   1. baseline: 50 closed-loop clients (90% GET / 10% SET) for a few seconds;
//   2. ADD a 4th node under the same load: keys moved per second, load throughput vs
//      baseline, p50/p99 latency during the move;
//   3. REMOVE a node, the same.
// Prints numbers only; not part of npm test.
import { closedLoop, percentile, pipelined, type LoadStats } from './load.js';
import { cpuMs, machineBusy, machineCpu, startProxy, startServer, stopAll, tempDir, type Proc } from './cluster.js';
import { ProxyConnection } from '../src/client/connection.js';

const KEYS = Number(process.env.KEYS ?? 1_000_000);
const CLIENTS = Number(process.env.CLIENTS ?? 50);
const BASELINE_MS = Number(process.env.BASELINE_MS ?? 3000);
const VALUE = 'v'.repeat(100);

function summary(w: LoadStats, ms: number): string {
  const sorted = w.latenciesUs.sort((a, b) => a - b);
  return `${Math.round(w.ops / (ms / 1000))} ops/s, p50 ${(percentile(sorted, 50) / 1000).toFixed(2)} ms, p99 ${(percentile(sorted, 99) / 1000).toFixed(2)} ms, errors ${w.errors}${w.firstError ? ` (${w.firstError})` : ''}`;
}

/** CPU ms this process (the load generator) has used so far. */
function selfCpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/**
 * CPU ms used by each process, and by the load generator (this process, last in `before`),
 * between two snapshots, as "name X ms" (Linux only).
 */
function cpuUsed(procs: readonly Proc[], before: (number | undefined)[]): string {
  const used = procs.map((p, i) => `${p.name} ${Math.round((cpuMs(p) ?? NaN) - (before[i] ?? NaN))} ms`);
  return [...used, `load generator ${Math.round(selfCpuMs() - (before[procs.length] ?? NaN))} ms`].join(', ');
}

const dir = tempDir('kv-bench-rebalance-');
const servers = await Promise.all([0, 1, 2, 3].map(() => startServer(dir)));
// MIGRATE_BATCH=n: kv-proxy --migrate-batch n (keys per IMPORT; the proxy's default otherwise).
// MIGRATE_RATE=n: kv-proxy --migrate-rate n (most keys moved per second; 0: no limit; the
// proxy's default otherwise).
const proxyArgs = [
  ...(process.env.MIGRATE_BATCH ? ['--migrate-batch', process.env.MIGRATE_BATCH] : []),
  ...(process.env.MIGRATE_RATE ? ['--migrate-rate', process.env.MIGRATE_RATE] : []),
];
const proxy = await startProxy(dir, undefined, proxyArgs);
const admin = new ProxyConnection('127.0.0.1', proxy.port, 600_000);
for (const s of servers.slice(0, 3)) await admin.send(['ADD', `127.0.0.1:${s.port}`]);

console.log(`loading ${KEYS} keys x ${VALUE.length} B ...`);
let t = performance.now();
function* loadRequests(): Generator<string[]> {
  const per = 100;
  for (let i = 0; i < KEYS; i += per) {
    const args = ['MSET'];
    for (let k = i; k < Math.min(KEYS, i + per); k++) args.push(`key:${k}`, VALUE);
    yield args;
  }
}
const loadErrors = await pipelined(proxy.port, loadRequests(), 64);
console.log(`loaded in ${((performance.now() - t) / 1000).toFixed(1)} s (${loadErrors} errors)`);

const load = closedLoop(proxy.port, CLIENTS, (c, i) => {
  const k = `key:${Math.floor(Math.random() * KEYS)}`;
  return (i + c) % 10 === 0 ? ['SET', k, VALUE] : ['GET', k];
});
await new Promise((r) => setTimeout(r, 500));
load.window();
const baseCpu = [...[proxy, ...servers].map(cpuMs), selfCpuMs()];
const baseMachine = machineCpu();
await new Promise((r) => setTimeout(r, BASELINE_MS));
const base = load.window();
const baseRate = base.ops / (BASELINE_MS / 1000);
console.log(`baseline (${CLIENTS} clients, 90% GET): ${summary(base, BASELINE_MS)}`);
console.log(`  CPU used: ${cpuUsed([proxy, ...servers], baseCpu)}; machine busy ${machineBusy(baseMachine, machineCpu())}`);

async function measure(label: string, args: string[]): Promise<void> {
  const procs = [proxy, ...servers];
  load.window();
  const cpuBefore = [...procs.map(cpuMs), selfCpuMs()];
  const machineBefore = machineCpu();
  const start = performance.now();
  const reply = await admin.send(args);
  const ms = performance.now() - start;
  const cpu = `${cpuUsed(procs, cpuBefore)}; machine busy ${machineBusy(machineBefore, machineCpu())}`;
  const w = load.window();
  const text = reply.type === 'simple' ? reply.value : reply.type === 'error' ? reply.message : '?';
  const moved = Number(/moved=(\d+)/.exec(text)?.[1] ?? 0);
  console.log(`${label}: ${text}`);
  console.log(`  moved ${moved} keys in ${(ms / 1000).toFixed(2)} s = ${Math.round(moved / (ms / 1000))} keys/s`);
  console.log(`  load during the move: ${summary(w, ms)} (${((w.ops / (ms / 1000) / baseRate) * 100).toFixed(0)}% of baseline)`);
  console.log(`  CPU used during the move (load included): ${cpu}`);
}

await measure('ADD 4th node', ['ADD', `127.0.0.1:${servers[3]!.port}`]);
await measure('REMOVE a node', ['REMOVE', `127.0.0.1:${servers[0]!.port}`]);
load.stop();
const size = await admin.send(['DBSIZE']);
console.log(`DBSIZE after: ${size.type === 'int' ? size.value : JSON.stringify(size)} (expected ${KEYS})`);
admin.close();
stopAll();
process.exit(0);
