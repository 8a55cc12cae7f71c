// kv-client's progress bar for long ADD/REMOVE (src/client/progress.ts): renderBar's layout, and
// withProgress against an in-process fake proxy that answers MIGRATION the way kv-proxy does (a
// RESP bulk string of `key:value` lines), so no real cluster is needed.
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { renderBar, withProgress } from '../../src/client/progress.js';
import { Decode, RequestDecoder } from '../../src/common/protocol/request-decoder.js';
import { encodeRespReply } from '../../src/common/protocol/resp.js';
import { bulk, error } from '../../src/common/protocol/reply.js';

const CLEAR = '\r\x1b[K';
const HEADLINE = '[Proxy] Rebalancing for new node...';

describe('renderBar', () => {
  it('draws a 30-column bar with percentage, counts and rate', () => {
    expect(renderBar(500, 1000, 200, 1234)).toBe(`[${'='.repeat(14)}>${' '.repeat(15)}]  50%  scanned 500/1000  moved 200  1234 keys/s`);
    expect(renderBar(1000, 1000, 333, 0)).toBe(`[${'='.repeat(29)}>]` + ' 100%  scanned 1000/1000  moved 333  0 keys/s');
  });

  it('an empty or unknown total shows an empty bar at 0%', () => {
    expect(renderBar(0, 0, 0, 0)).toBe(`[${' '.repeat(30)}]   0%  scanned 0/0  moved 0  0 keys/s`);
    expect(renderBar(5, 0, 0, 0)).toBe(`[${' '.repeat(30)}]   0%  scanned 5/0  moved 0  0 keys/s`);
    expect(renderBar(1, 1000, 0, 0)).toBe(`[${' '.repeat(30)}]   0%  scanned 1/1000  moved 0  0 keys/s`);
  });

  it('more scanned than the estimated total stays at 100%', () => {
    expect(renderBar(1500, 1000, 10, 5)).toBe(`[${'='.repeat(29)}>]` + ' 100%  scanned 1500/1000  moved 10  5 keys/s');
  });

  it('the bar is always 30 columns and grows with the fraction scanned', () => {
    const problems: string[] = [];
    let lastFilled = 0;
    for (let scanned = 0; scanned <= 997; scanned++) {
      const line = renderBar(scanned, 997, 0, 0);
      const m = /^\[([=> ]{30})\] +(\d+)%/.exec(line);
      if (m === null) {
        problems.push(`malformed: ${line}`);
        continue;
      }
      const filled = m[1]!.trimEnd().length;
      if (filled < lastFilled) problems.push(`shrank from ${lastFilled} to ${filled}: ${line}`);
      if (!/^=*>?$/.test(m[1]!.slice(0, filled))) problems.push(`not ===>: ${line}`);
      if (Number(m[2]) !== Math.round((scanned / 997) * 100)) problems.push(`wrong percentage: ${line}`);
      lastFilled = filled;
    }
    expect(problems).toEqual([]);
    expect(lastFilled).toBe(30);
  });
});

// ---------------------------------------------------------------------------------------------
// A fake proxy: decodes RESP requests, answers MIGRATION with the text `migration()` returns.

interface FakeProxy {
  port: number;
  /** Connections accepted so far, and those still open. */
  connections: number;
  open: number;
  requests: string[];
  close(): Promise<void>;
}

const servers: FakeProxy[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

/** `hangUp`: close every connection as soon as it is accepted (a proxy that went away). */
async function fakeProxy(migration: () => string, hangUp = false): Promise<FakeProxy> {
  const sockets = new Set<net.Socket>();
  const fake: FakeProxy = { port: 0, connections: 0, open: 0, requests: [], close: async () => {} };
  const server = net.createServer((socket) => {
    fake.connections++;
    sockets.add(socket);
    fake.open = sockets.size;
    socket.on('close', () => {
      sockets.delete(socket);
      fake.open = sockets.size;
    });
    socket.on('error', () => {});
    if (hangUp) {
      socket.destroy();
      return;
    }
    const decoder = new RequestDecoder();
    socket.on('data', (chunk: Buffer) => {
      decoder.push(chunk);
      while (decoder.next() === Decode.Request) {
        const name = decoder.args[0]!.toString('latin1').toUpperCase();
        fake.requests.push(name);
        socket.write(encodeRespReply(name === 'MIGRATION' ? bulk(migration()) : error(`ERR unknown command '${name}'`)));
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  fake.port = (server.address() as net.AddressInfo).port;
  fake.close = () =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    });
  servers.push(fake);
  return fake;
}

const fields = (f: Record<string, string | number>): string => '# Migration\r\n' + Object.entries(f).map(([k, v]) => `${k}:${v}\r\n`).join('');

const running = fields({
  migration_state: 'running',
  migration_kind: 'add',
  migration_node: '127.0.0.1:8083',
  migration_keys_moved: 200,
  migration_keys_scanned: 500,
  migration_keys_total: 1000,
  migration_keys_per_sec: 1234,
});

/** A promise with its resolve/reject exposed. */
function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: Error) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Poll `check` every 5 ms until it is true; fail after `timeoutMs`. */
async function until(what: string, timeoutMs: number, check: () => boolean): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

interface Written {
  text: string;
  at: number;
}

describe('withProgress', () => {
  it('after the delay writes the headline, then the bar on one line, and clears it when the work is done', async () => {
    const fake = await fakeProxy(() => running);
    const writes: Written[] = [];
    const work = deferred<string>();
    const started = performance.now();
    const run = withProgress('127.0.0.1', fake.port, HEADLINE, work.promise, { delayMs: 150, intervalMs: 10, write: (text) => writes.push({ text, at: performance.now() - started }) });
    await until('three progress updates', 10_000, () => writes.length >= 4);
    work.resolve('OK added 127.0.0.1:8083 moved=200 scanned=1000 ms=5');
    expect(await run).toEqual({ result: 'OK added 127.0.0.1:8083 moved=200 scanned=1000 ms=5', shown: true });

    const texts = writes.map((w) => w.text);
    expect(writes[0]!.at, 'nothing is written before the delay').toBeGreaterThanOrEqual(140);
    expect(texts[0]).toBe(`${HEADLINE}\n`);
    // Each update rewrites the same terminal line: carriage return, erase, bar.
    const bar = `${CLEAR}${renderBar(500, 1000, 200, 1234)}`;
    expect(texts[texts.length - 1], 'the bar is erased at the end').toBe(CLEAR);
    expect(texts.slice(1, -1).length).toBeGreaterThanOrEqual(3);
    expect(texts.slice(1, -1).every((t) => t === bar), JSON.stringify(texts)).toBe(true);
    expect(texts.filter((t) => t === `${HEADLINE}\n`), 'the headline is written once').toHaveLength(1);
    expect(fake.requests.every((r) => r === 'MIGRATION')).toBe(true);

    // The poller hangs up once the work is done.
    await until('the progress connection to close', 10_000, () => fake.open === 0);
    expect(fake.connections, 'one polling connection').toBe(1);
  });

  it('writes nothing and never connects when the work finishes before the delay', async () => {
    const fake = await fakeProxy(() => running);
    const writes: string[] = [];
    const result = await withProgress('127.0.0.1', fake.port, HEADLINE, Promise.resolve('OK already a member 127.0.0.1:8083'), { delayMs: 300, intervalMs: 10, write: (t) => writes.push(t) });
    expect(result).toEqual({ result: 'OK already a member 127.0.0.1:8083', shown: false });
    expect(writes).toEqual([]);
    expect(fake.connections, 'no MIGRATION polling for short work').toBe(0);
  });

  it('returns as soon as short work settles, without sitting out the delay', async () => {
    // kv-client wraps every interactive ADD/REMOVE in withProgress with a 1 s delay: an ADD that
    // takes 5 ms must not take a second to print its reply.
    const fake = await fakeProxy(() => running);
    const started = performance.now();
    const result = await withProgress('127.0.0.1', fake.port, HEADLINE, Promise.resolve('OK'), { delayMs: 2000, write: () => {} });
    const elapsed = performance.now() - started;
    expect(result.shown).toBe(false);
    expect(elapsed, `withProgress took ${Math.round(elapsed)} ms for work that was already done`).toBeLessThan(1000);
  });

  it('shows no bar while the proxy reports no running move', async () => {
    const fake = await fakeProxy(() => fields({ migration_state: 'idle', migration_keys_moved: 0, migration_keys_scanned: 0, migration_keys_total: 0, migration_keys_per_sec: 0 }));
    const writes: string[] = [];
    const work = deferred<string>();
    const run = withProgress('127.0.0.1', fake.port, HEADLINE, work.promise, { delayMs: 20, intervalMs: 10, write: (t) => writes.push(t) });
    await until('the proxy to be polled three times', 10_000, () => fake.requests.length >= 3);
    work.resolve('ERR membership change in progress');
    expect(await run).toEqual({ result: 'ERR membership change in progress', shown: false });
    expect(writes).toEqual([]);
  });

  it('clears the bar and passes the error on when the work fails', async () => {
    const fake = await fakeProxy(() => running);
    const writes: string[] = [];
    const work = deferred<string>();
    const run = withProgress('127.0.0.1', fake.port, HEADLINE, work.promise, { delayMs: 20, intervalMs: 10, write: (t) => writes.push(t) });
    const outcome = run.then(
      () => 'resolved',
      (err: Error) => err.message,
    );
    await until('a bar', 10_000, () => writes.length >= 2);
    work.reject(new Error('lost the connection to the proxy'));
    expect(await outcome).toBe('lost the connection to the proxy');
    expect(writes[0]).toBe(`${HEADLINE}\n`);
    expect(writes[writes.length - 1]).toBe(CLEAR);
  });

  it('a proxy that drops the polling connection does not disturb the work', async () => {
    const fake = await fakeProxy(() => running, true);
    const writes: string[] = [];
    const work = deferred<string>();
    const run = withProgress('127.0.0.1', fake.port, HEADLINE, work.promise, { delayMs: 10, intervalMs: 10, write: (t) => writes.push(t) });
    await until('the poller to connect', 10_000, () => fake.connections >= 1);
    work.resolve('OK');
    expect(await run).toEqual({ result: 'OK', shown: false });
    expect(writes).toEqual([]);
  });
});
