// The README walkthrough, step by step, with kv-client in one-shot mode: its output lines are
// the public contract (docs: ORIGINAL-README.md).
import { afterEach, describe, expect, it } from 'vitest';
import { ask, cleanup, crash, lines, nodeAddress, restart, runClient, startCluster, startProxy, startServer, tempDir, waitFor, type RunResult } from './harness.js';

afterEach(cleanup);

/** Run a one-shot kv-client command and insist it succeeded. */
async function kv(port: number, ...args: string[]): Promise<string[]> {
  const r = await runClient(['--port', String(port), ...args]);
  expect(r.code, `kv-client ${args.join(' ')} exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`).toBe(0);
  return lines(r.stdout);
}

describe('README walkthrough', () => {
  it('adds nodes, stores and reads, survives kill -9 of the holder, rebalances and evacuates', async () => {
    const { proxy, servers } = await startCluster(2);
    const s1 = servers[0]!;
    const s2 = servers[1]!;
    const P = proxy.port;

    // 1. Initialize the cluster.
    expect(await kv(P, 'ADD', nodeAddress(s1))).toEqual([`[Proxy] Node Added: ${nodeAddress(s1)}`]);
    expect(await kv(P, 'ADD', nodeAddress(s2))).toEqual([`[Proxy] Node Added: ${nodeAddress(s2)}`]);

    // 2. Store and retrieve.
    expect(await kv(P, 'SET', 'user1', 'Alice')).toEqual(['OK']);
    expect(await kv(P, 'GET', 'user1')).toEqual(['Value: Alice']);

    // 3. The kill test: the server holding user1 dies hard and comes back from its WAL.
    const direct = await Promise.all(servers.map((s) => ask(s.port, 'GET user1')));
    expect([...direct].sort(), 'exactly one server holds user1').toEqual(['NOT_FOUND', 'VALUE Alice']);
    const holder = servers[direct.indexOf('VALUE Alice')]!;
    await crash(holder);
    const back = await restart(holder);
    servers[servers.indexOf(holder)] = back;
    let last: RunResult | undefined;
    await waitFor('GET user1 through the proxy after the restart', 10_000, async () => {
      last = await runClient(['--port', String(P), 'GET', 'user1']);
      return last.code === 0 && last.stdout === 'Value: Alice\n' ? true : undefined;
    }).catch((err: Error) => {
      throw new Error(`${err.message}\nlast kv-client result: ${JSON.stringify(last)}\n${proxy.tail()}`);
    });

    // 4. Dynamic scaling.
    const s3 = await startServer({ dir: tempDir('s3') });
    expect(await kv(P, 'ADD', nodeAddress(s3))).toEqual(['[Proxy] Rebalancing for new node...', '[Proxy] Rebalancing Complete.']);
    expect(await kv(P, 'GET', 'user1')).toEqual(['Value: Alice']);

    // 5. Evacuation.
    expect(await kv(P, 'REMOVE', nodeAddress(servers[0]!))).toEqual(['[Proxy] Evacuating node...', '[Proxy] Node Removed.']);
    expect(await kv(P, 'GET', 'user1')).toEqual(['Value: Alice']);
    // Membership as the proxy reports it (the text protocol, not kv-client's table).
    const nodes = (await ask(P, 'NODES')).split('\n');
    expect(nodes.map((l) => l.split(' ')[0]).sort()).toEqual([nodeAddress(servers[1]!), nodeAddress(s3)].sort());
  });
});

describe('kv-client', () => {
  it('exits non-zero for an error reply, and for a proxy that is not there', async () => {
    const proxy = await startProxy({ dir: tempDir('proxy') });
    const failed = await runClient(['--port', String(proxy.port), 'FOO']);
    expect(failed.code, failed.stdout + failed.stderr).not.toBe(0);
    expect(failed.stdout).toMatch(/ERR/);

    // A port that nothing listens on: the proxy we had, now dead.
    const port = proxy.port;
    await crash(proxy);
    const unreachable = await runClient(['--port', String(port), 'GET', 'user1']);
    expect(unreachable.code, unreachable.stdout + unreachable.stderr).not.toBe(0);
    expect(unreachable.stdout + unreachable.stderr).toMatch(/cannot connect/);
  });

  it('prints one result per line when commands are piped on stdin', async () => {
    const { proxy, servers } = await startCluster(1);
    await kv(proxy.port, 'ADD', nodeAddress(servers[0]!));
    const r = await runClient(['--port', String(proxy.port)], { stdin: 'SET user1 Alice\nGET user1\nPING\nSET greeting hello world\nGET greeting\nDEL user1\nGET user1\nEXISTS greeting\n' });
    expect(r.code, r.stderr).toBe(0);
    expect(lines(r.stdout)).toEqual(['OK', 'Value: Alice', 'PONG', 'OK', 'Value: hello world', 'Deleted', '(not found)', '(integer) 1']);
  });
});
