// The stock Redis command-line tools against the proxy: redis-cli for single commands and
// redis-benchmark for a pipelined load (both send COMMAND/CONFIG probes first).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HOST, cleanup, dbsize, nodeAddress, requireTool, run, startCluster, TextClient, type Cluster } from './harness.js';

const INSTALL = 'apt-get install -y redis-tools';
let cluster: Cluster;

beforeAll(async () => {
  cluster = await startCluster(2);
  const admin = await TextClient.connect(cluster.proxy.port);
  for (const s of cluster.servers) expect(await admin.send(`ADD ${nodeAddress(s)}`)).toMatch(/^OK added /);
  admin.close();
});

afterAll(cleanup);

describe('redis-cli', () => {
  it('sets and gets a key through the proxy', async () => {
    const cli = requireTool('redis-cli', INSTALL);
    const port = String(cluster.proxy.port);
    const set = await run(cli, ['-h', HOST, '-p', port, 'set', 'k', 'v']);
    expect(set.code, set.stderr).toBe(0);
    expect(set.stdout).toBe('OK\n');
    const get = await run(cli, ['-h', HOST, '-p', port, 'get', 'k']);
    expect(get.code, get.stderr).toBe(0);
    expect(get.stdout).toBe('v\n');
    const missing = await run(cli, ['-h', HOST, '-p', port, 'get', 'no-such-key']);
    expect(missing.stdout).toBe('\n');
  });
});

describe('redis-cli --pipe', () => {
  it('bulk-loads a RESP stream through the proxy, binary values intact, and ends on its ECHO', async () => {
    const cli = requireTool('redis-cli', INSTALL);
    const value = (i: number): Buffer => Buffer.from(`pipe value ${i}\r\n\u0000 end`, 'latin1');
    const frames: Buffer[] = [];
    for (let i = 0; i < 3000; i++) {
      const key = Buffer.from(`pipe:${i}`);
      const v = value(i);
      frames.push(Buffer.from(`*3\r\n$3\r\nSET\r\n$${key.length}\r\n`), key, Buffer.from(`\r\n$${v.length}\r\n`), v, Buffer.from('\r\n'));
    }
    // --pipe appends ECHO <random> and waits for it to come back before it exits.
    const r = await run(cli, ['-h', HOST, '-p', String(cluster.proxy.port), '--pipe'], { stdin: Buffer.concat(frames), timeoutMs: 60_000 });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('errors: 0, replies: 3000');
    const get = await run(cli, ['-h', HOST, '-p', String(cluster.proxy.port), '--no-raw', 'get', 'pipe:2999']);
    expect(get.stdout).toBe('"pipe value 2999\\r\\n\\x00 end"\n');
  });
});

describe('redis-benchmark', () => {
  it('runs SET and GET without errors and reports their throughput', async () => {
    const bench = requireTool('redis-benchmark', INSTALL);
    const r = await run(bench, ['-h', HOST, '-p', String(cluster.proxy.port), '-t', 'set,get', '-n', '20000', '-r', '10000', '-q'], { timeoutMs: 120_000 });
    const output = r.stdout + r.stderr;
    expect(r.code, output).toBe(0);
    // -q redraws a progress line with \r; the final result of each test ends with \n.
    const outputLines = output.split(/[\r\n]+/).map((l) => l.trim()).filter((l) => l !== '');
    expect(outputLines.filter((l) => /\bERR\b|error/i.test(l)), 'error lines in redis-benchmark output').toEqual([]);
    for (const test of ['SET', 'GET']) {
      const result = outputLines.find((l) => new RegExp(`^${test}: [\\d.]+ requests per second`).test(l));
      expect(result, `a "${test}: N requests per second" line in:\n${output}`).toBeDefined();
      expect(Number(/([\d.]+) requests per second/.exec(result!)![1])).toBeGreaterThan(0);
    }
    // The keys it wrote are really there (-r 10000: key:000000000000 .. key:000000009999).
    expect(await dbsize(cluster.proxy.port)).toBeGreaterThan(1000);
  });
});
