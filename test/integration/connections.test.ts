// Connection-level limits, against a kv-server and against the kv-proxy: --max-clients, many
// idle or half-sent connections, --timeout for idle clients, and --max-output for clients that
// do not read their replies (docs/protocol.md, "Limits" and "When the connection closes").
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanup, crash, startServer, tempDir, waitFor, type ProcHandle } from './harness.js';
import {
  connectedClients,
  destroyRawConnections,
  mib,
  MiB,
  peakRssBytes,
  RawConnection,
  resetPeakRss,
  resp,
  rssBytes,
  startTarget,
  TARGETS,
  timed,
} from './support-robustness.js';

let backend: ProcHandle;

beforeAll(async () => {
  backend = await startServer({ dir: tempDir('conn-backend') });
});

afterAll(async () => {
  destroyRawConnections();
  await cleanup();
});

/** Start a target for one test and stop it (SIGKILL, by pid) when the test is done. */
async function withTarget(kind: (typeof TARGETS)[number], args: readonly string[], body: (t: ProcHandle) => Promise<void>): Promise<void> {
  const t = await startTarget(kind, args, backend);
  try {
    await body(t);
  } catch (err) {
    // Say whether the process was still running, and what it logged.
    const state = t.proc.exitCode !== null || t.proc.signalCode !== null ? `exited (${t.proc.exitCode ?? t.proc.signalCode})` : 'running';
    (err as Error).message += `\n${kind} pid ${t.pid} is ${state}\n${t.tail()}`;
    throw err;
  } finally {
    destroyRawConnections();
    await crash(t);
  }
}

/** `$<n>\r\n<bytes>\r\n` for a value, as latin1 text (how RawConnection.reply() returns it). */
function bulkText(value: Buffer): string {
  return `$${value.length}\r\n${value.toString('latin1')}\r\n`;
}

/**
 * `count` GETs of `key` through `c`, one at a time (so the client never has more than one
 * reply outstanding, well under --max-output), so the process has already produced this much
 * output before a memory measurement starts: a fresh Node process grows by tens of MiB under
 * its first burst of traffic, whatever that traffic is (heap sizing, not retained data).
 */
async function warmUp(c: RawConnection, key: string, count: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    c.socket.write(resp('GET', key));
    await c.reply(30_000);
  }
}

describe('--max-clients', () => {
  it.each(TARGETS)('%s: the connection over the limit gets -ERR max clients reached and is closed; the others keep working', async (kind) => {
    await withTarget(kind, ['--max-clients', '3'], async (t) => {
      // A connection that got PONG was accepted and is counted. A connection closed just before
      // (the proxy's ADD) may still be counted for a moment, so each slot is polled for.
      const acquire = (): Promise<RawConnection> =>
        waitFor('a client slot', 10_000, async () => {
          const c = await RawConnection.connect(t.port);
          c.socket.write('PING\n');
          const line = await c.line().catch(() => undefined);
          if (line === 'PONG') return c;
          c.destroy();
          return undefined;
        });
      const first = [await acquire(), await acquire(), await acquire()];

      const extra = await RawConnection.connect(t.port);
      extra.socket.write('PING\n'); // even a text request: the rejection is always RESP
      await extra.waitForClose();
      expect(extra.text()).toBe('-ERR max clients reached\r\n');

      for (const [i, c] of first.entries()) {
        expect(await c.ask(`SET mc:${i} v${i}`, `GET mc:${i}`)).toEqual(['OK', `VALUE v${i}`]);
        expect(await c.askResp('PING')).toBe('+PONG\r\n');
      }
      // Once one of them leaves, a new connection is accepted again.
      first[0]!.destroy();
      const again = await acquire();
      expect(await again.ask('GET mc:1')).toEqual(['VALUE v1']);
    });
  });
});

describe('many idle and half-sent connections', () => {
  it.each(TARGETS)('%s: with 2000 of them open, a normal client is answered in under a second', async (kind) => {
    await withTarget(kind, [], async (t) => {
      const idle: RawConnection[] = [];
      const halfSent: RawConnection[] = [];
      // In batches, so the listen backlog is never the bottleneck.
      for (let batch = 0; batch < 20; batch++) {
        const conns = await Promise.all(Array.from({ length: 100 }, () => RawConnection.connect(t.port, { timeoutMs: 30_000 })));
        for (const [i, c] of conns.entries()) {
          if (i % 2 === 0) idle.push(c);
          else {
            c.socket.write('*3\r\n$3\r\nSET\r\n'); // a RESP request cut off after its first argument
            halfSent.push(c);
          }
        }
      }
      const counted = await waitFor(`${kind} to count 2000 connected clients`, 30_000, async () => {
        const n = await connectedClients(t.port);
        return n >= 2000 ? n : undefined;
      });
      expect(counted).toBeGreaterThanOrEqual(2000);

      const client = await RawConnection.connect(t.port);
      const latencies: Record<string, number> = {};
      const steps: [string, () => Promise<unknown>, unknown][] = [
        ['PING', () => client.ask('PING'), ['PONG']],
        ['SET', () => client.ask('SET crowd:key hello'), ['OK']],
        ['GET', () => client.ask('GET crowd:key'), ['VALUE hello']],
        ['RESP GET', () => client.askResp('GET', 'crowd:key'), '$5\r\nhello\r\n'],
        ['connect+PING', async () => {
          const c = await RawConnection.connect(t.port);
          const r = await c.ask('PING');
          c.destroy();
          return r;
        }, ['PONG']],
      ];
      for (const [name, step, expected] of steps) {
        const { value, ms } = await timed(step);
        expect(value, name).toEqual(expected);
        latencies[name] = ms;
      }
      console.log(`[connections] ${kind} with ${counted} idle/half-sent clients: ${JSON.stringify(latencies)} ms`);
      for (const [name, ms] of Object.entries(latencies)) expect(ms, `${name} took ${ms} ms`).toBeLessThan(1000);

      // The half-sent requests were kept, not dropped: finishing one completes it.
      const last = halfSent[halfSent.length - 1]!;
      last.socket.write('$9\r\ncrowd:key\r\n$5\r\nworld\r\n');
      expect(await last.reply()).toBe('+OK\r\n');
      expect(await idle[0]!.ask('GET crowd:key')).toEqual(['VALUE world']);
      expect(idle.every((c) => !c.closed) && halfSent.every((c) => !c.closed)).toBe(true);
    });
  });
});

describe('--timeout', () => {
  it.each(TARGETS)('%s --timeout 1: closes an idle connection, not a busy one', async (kind) => {
    await withTarget(kind, ['--timeout', '1'], async (t) => {
      const idle = await RawConnection.connect(t.port);
      const silent = await RawConnection.connect(t.port); // never sends anything
      const busy = await RawConnection.connect(t.port);
      expect(await idle.ask('PING')).toEqual(['PONG']);
      const idleSince = performance.now();

      // The busy client sends a request about every 100 ms for 3 s: three times the timeout.
      const busyUntil = performance.now() + 3000;
      let requests = 0;
      while (performance.now() < busyUntil) {
        expect(await busy.ask(`SET busy:${requests} x`)).toEqual(['OK']);
        requests++;
        await new Promise((r) => setTimeout(r, 100)); // pacing under test, not a wait for a condition
      }
      expect(busy.closed, 'the busy connection was closed').toBe(false);
      expect(await busy.ask('PING')).toEqual(['PONG']);

      const closedAt = await idle.waitForClose(10_000);
      await silent.waitForClose(10_000);
      const idleMs = Math.round(closedAt - idleSince);
      console.log(`[connections] ${kind} --timeout 1: idle connection closed after ${idleMs} ms; busy one sent ${requests} requests over 3 s and stayed open`);
      expect(idleMs).toBeGreaterThanOrEqual(900);
      expect(idleMs).toBeLessThan(3000); // it was closed well before the busy loop ended
      // Closed without a message: nothing arrived after its PONG.
      expect(idle.text()).toBe('');
      expect(silent.text()).toBe('');
    });
  });
});

describe('--max-output (slow readers)', () => {
  it.each(TARGETS)('%s --max-output 1mb: a client that never reads is disconnected; other clients are unaffected and memory stays bounded', async (kind) => {
    await withTarget(kind, ['--max-output', '1mb'], async (t) => {
      const value = Buffer.alloc(256 * 1024, 0x62);
      const other = await RawConnection.connect(t.port);
      expect(await other.askResp('SET', 'slow:big', value)).toBe('+OK\r\n');
      const expected = bulkText(value);
      await warmUp(other, 'slow:big', 128);
      const before = rssBytes(t.pid);
      resetPeakRss(t.pid);

      const slow = await RawConnection.connect(t.port, { paused: true });
      const fourGets = Buffer.concat(Array.from({ length: 4 }, () => resp('GET', 'slow:big'))); // 1 MiB of replies
      let gets = 0;
      const otherMs: number[] = [];
      const deadline = performance.now() + 30_000;
      while (!slow.closed && performance.now() < deadline) {
        slow.socket.write(fourGets);
        gets += 4;
        // Another client is served correctly meanwhile; its round trip also paces the writes.
        const { value: reply, ms } = await timed(() => other.askResp('GET', 'slow:big'));
        expect(reply === expected, `GET of the 256 KiB value by another client answered ${reply.slice(0, 80)}`).toBe(true);
        otherMs.push(ms);
      }
      expect(slow.closed, `the slow reader was still connected after ${gets} GETs (${mib(gets * value.length)} of replies)`).toBe(true);
      expect(slow.receivedBytes, 'it never read anything').toBe(0);
      // Not cut before its unread replies could exceed the bound.
      expect(gets * value.length).toBeGreaterThan(1 * MiB);
      const growth = peakRssBytes(t.pid) - before;
      console.log(`[connections] ${kind} --max-output 1mb: slow reader cut after ${gets} GETs (${mib(gets * value.length)} requested); other client's GETs max ${Math.max(...otherMs)} ms; peak RSS growth ${mib(growth)}`);
      expect(growth).toBeLessThan(48 * MiB);
      expect(await other.askResp('GET', 'slow:big')).toBe(expected);
      expect(await other.ask('PING')).toEqual(['PONG']);
    });
  });

  it.each(TARGETS)('%s --max-output 1mb: one pipelined burst of GETs from a client that never reads does not balloon memory or disturb others', async (kind) => {
    await withTarget(kind, ['--max-output', '1mb'], async (t) => {
      const value = Buffer.alloc(128 * 1024, 0x63);
      const other = await RawConnection.connect(t.port);
      expect(await other.askResp('SET', 'burst:big', value)).toBe('+OK\r\n');
      const expected = bulkText(value);
      await warmUp(other, 'burst:big', 256);
      const before = rssBytes(t.pid);
      resetPeakRss(t.pid);

      // 1000 GETs in one write, as a pipelining client sends them: 125 MiB of replies asked
      // for in ~25 KB of requests, by a client allowed 1 MiB of unread output.
      const slow = await RawConnection.connect(t.port, { paused: true });
      slow.socket.write(Buffer.concat(Array.from({ length: 1000 }, () => resp('GET', 'burst:big'))));
      const otherReplies: string[] = [];
      const otherMs: number[] = [];
      const deadline = performance.now() + 15_000;
      while (!slow.closed && performance.now() < deadline) {
        const { value: reply, ms } = await timed(() => other.askResp('GET', 'burst:big'));
        otherReplies.push(reply === expected ? 'value' : reply.slice(0, 120));
        otherMs.push(ms);
        if (!slow.closed) slow.socket.write(resp('PING')); // a write notices the reset of a cut connection
      }
      const growth = peakRssBytes(t.pid) - before;
      const errors = [...new Set(otherReplies.filter((r) => r !== 'value'))];
      const slowest = Math.max(...otherMs);
      console.log(
        `[connections] ${kind} burst of 1000 GETs x 128 KiB, --max-output 1mb: cut=${slow.closed}; peak RSS growth ${mib(growth)}; ` +
          `other client: ${otherReplies.filter((r) => r === 'value').length} values, slowest ${slowest} ms, errors ${JSON.stringify(errors)}`,
      );
      expect(growth, `peak RSS grew by ${mib(growth)} for a client allowed 1 MiB of unread output`).toBeLessThan(48 * MiB);
      expect(errors, 'replies other than the value seen by another client during the burst').toEqual([]);
      expect(slowest, 'slowest GET of another client during the burst (ms)').toBeLessThan(1000);
      expect(slow.closed, 'the non-reading client was disconnected').toBe(true);
      expect(await other.askResp('GET', 'burst:big')).toBe(expected);
    });
  });
});

// Every client socket of a process reads into one shared buffer (client-listener.ts). What a
// connection keeps past a read must be a copy, or the next client's read overwrites it.
describe('the shared read buffer', () => {
  it('a reply held behind a slow one keeps its bytes while other clients are read', async () => {
    // A push at 100 keys/s runs for seconds; each RANGEPUSH WAIT on it holds its reply ~100 ms.
    const target = await startServer({ dir: tempDir('shared-read-target') });
    const keys = Array.from({ length: 400 }, (_, i) => `shared:${i}`);
    const owner = await RawConnection.connect(backend.port);
    expect(await owner.ask(...keys.map((k) => `SET ${k} v`))).toEqual(keys.map(() => 'OK'));
    const all = ['0', '4294967295', '0'];
    expect(await owner.askResp('RANGEPUSH', 'START', 'shared-read', '10', '100', '1', `127.0.0.1:${target.port}`, ...all)).toBe('+OK\r\n');
    try {
      const marker = `held-${'0123456789abcdef'.repeat(8)}`;
      const held = await RawConnection.connect(backend.port);
      // One read: the WAIT answers later, so the ECHO's reply, made now from the request's
      // bytes in the shared buffer, waits in the queue behind it.
      held.socket.write(Buffer.concat([resp('RANGEPUSH', 'WAIT', 'shared-read'), resp('ECHO', marker)]));
      // Meanwhile another client's reads fill the shared buffer with other bytes of the same shape.
      const other = await RawConnection.connect(backend.port);
      const flood = Buffer.concat(Array.from({ length: 200 }, () => resp('ECHO', 'z'.repeat(marker.length))));
      let rounds = 0;
      while (held.received().length === 0 && rounds < 500) {
        other.socket.write(flood);
        for (let i = 0; i < 200; i++) await other.reply();
        rounds++;
      }
      expect(rounds, 'rounds of other reads before the held replies came').toBeGreaterThan(0);
      expect(await held.reply()).toMatch(/^\*3\r\n:0\r\n:\d+\r\n:\d+\r\n$/);
      expect(await held.reply()).toBe(`$${marker.length}\r\n${marker}\r\n`);
    } finally {
      await owner.askResp('RANGEPUSH', 'STOP', 'shared-read');
    }
  });
});
