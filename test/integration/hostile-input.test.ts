// Hostile and malformed input, against a kv-server and against the kv-proxy: nothing a client
// sends can make the process buffer without bound, crash, or stop serving others. Every size
// that arrives from the network is checked against its limit before bytes are kept
// (docs/protocol.md, "Limits"), and the limits follow their flags.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanup, nodeAddress, startProxy, startServer, tempDir, TextClient, type ProcHandle } from './harness.js';
import { assertServing, destroyRawConnections, isRunning, mib, MiB, peakRssBytes, RawConnection, resetPeakRss, resp, rssBytes, sendUntilClosed, TARGETS, type TargetKind } from './support-robustness.js';
import { seededRandom as prng } from '../support/seeded-random.js';

/**
 * How much a process may grow while it is fed tens of MiB it must not keep. Measured after
 * warmUp(): a Node process that has never seen traffic grows by ~35 MiB under ANY 64 MiB of
 * input (young-generation heap and malloc arenas sized to the read rate, not retained data),
 * so the bound is meaningful only once that baseline is reached. Keeping the 64 MiB line, or
 * half of it, would still blow through it.
 */
const RSS_BOUND = 32 * MiB;

interface Target {
  /** Default limits. */
  main: ProcHandle;
  /** --max-line 1kb --max-bulk 4kb --max-args 8. */
  small: ProcHandle;
}

const SMALL_LIMITS = ['--max-line', '1kb', '--max-bulk', '4kb', '--max-args', '8'];
const targets = new Map<TargetKind, Target>();

beforeAll(async () => {
  const [main, small, backend] = await Promise.all([
    startServer({ dir: tempDir('hostile-main') }),
    startServer({ dir: tempDir('hostile-small'), args: SMALL_LIMITS }),
    startServer({ dir: tempDir('hostile-backend') }),
  ]);
  targets.set('kv-server', { main, small });
  const [proxyMain, proxySmall] = await Promise.all([startProxy({ dir: tempDir('hostile-proxy') }), startProxy({ dir: tempDir('hostile-proxy-small'), args: SMALL_LIMITS })]);
  for (const proxy of [proxyMain, proxySmall]) {
    const admin = await TextClient.connect(proxy.port);
    expect(await admin.send(`ADD ${nodeAddress(backend)}`)).toMatch(/^OK (added|already)/);
    admin.close();
  }
  targets.set('kv-proxy', { main: proxyMain, small: proxySmall });
});

afterAll(async () => {
  destroyRawConnections();
  await cleanup();
});

function target(name: TargetKind): Target {
  const t = targets.get(name);
  if (t === undefined) throw new Error(`${name} did not start`);
  return t;
}

/** The process is alive, and a brand-new connection is served (text and RESP PING). */
async function expectAlive(p: ProcHandle): Promise<void> {
  expect(isRunning(p.pid), `${p.kind} pid ${p.pid} is still running\n${p.tail()}`).toBe(true);
  await assertServing(p.port);
}

/**
 * 64 MiB of ordinary traffic (lines under the limit, each an unknown command), so the process
 * reaches the memory footprint it has at this input rate before a measurement starts.
 */
async function warmUp(p: ProcHandle): Promise<void> {
  const c = await RawConnection.connect(p.port);
  try {
    const lines = Buffer.from(`WARMUP ${'a'.repeat(60_000)}\n`.repeat(4));
    let sent = 0;
    while (sent < 64 * MiB) {
      if (!c.socket.write(lines)) await new Promise<void>((resolve) => c.socket.once('drain', () => resolve()));
      sent += lines.length;
    }
    c.socket.write('PING\n');
    await c.until('the warm-up to be consumed', 60_000, () => (c.text().endsWith('PONG\n') ? true : undefined));
  } finally {
    c.destroy();
  }
}

/** A normal client can write and read a key. */
async function expectServesData(p: ProcHandle, key: string): Promise<void> {
  const c = await RawConnection.connect(p.port);
  try {
    expect(await c.ask(`SET ${key} still here`, `GET ${key}`)).toEqual(['OK', 'VALUE still here']);
  } finally {
    c.destroy();
  }
}


describe.each(TARGETS)('%s under hostile input', (name) => {
  it('a 64 MiB line with no newline gets ERR line too long, is not buffered, and the line after it works', async () => {
    const { main } = target(name);
    await warmUp(main);
    const before = rssBytes(main.pid);
    resetPeakRss(main.pid);
    const c = await RawConnection.connect(main.port);
    // 64 MiB in 256 KiB writes, with backpressure, and no LF anywhere.
    const written = await c.stream(64 * MiB, 256 * 1024, 0x78);
    expect(written).toBe(64 * MiB);
    expect(await c.line(30_000)).toBe('ERR line too long (limit 65536 bytes)');
    // The rest of the line is skipped up to its newline; the next line on the same connection
    // is read normally. Its reply also proves the process has consumed all 64 MiB.
    c.socket.write('\nPING\nSET hostile:after-long-line ok\nGET hostile:after-long-line\n');
    expect(await c.line(30_000)).toBe('PONG');
    expect(await c.line()).toBe('OK');
    expect(await c.line()).toBe('VALUE ok');
    const growth = rssBytes(main.pid) - before;
    const peak = peakRssBytes(main.pid) - before;
    console.log(`[hostile] ${name}: 64 MiB line: RSS growth ${mib(growth)}, peak growth ${mib(peak)}`);
    expect(peak, `peak RSS grew by ${mib(peak)} while skipping a 64 MiB line`).toBeLessThan(RSS_BOUND);
    expect(growth).toBeLessThan(RSS_BOUND);
    expect(c.closed).toBe(false);
    c.destroy();
    await expectAlive(main);
    await expectServesData(main, 'hostile:after-64mib');
  });

  it('a RESP bulk length over --max-bulk gets -ERR and a close, without buffering what follows', async () => {
    const { main } = target(name);
    await assertServing(main.port);
    const before = rssBytes(main.pid);
    resetPeakRss(main.pid);
    const c = await RawConnection.connect(main.port);
    c.socket.write('*3\r\n$3\r\nSET\r\n$5\r\nhuge1\r\n$67108864\r\n');
    // Then actually send the 64 MiB it announced; the process must not keep it.
    const sent = await c.stream(64 * MiB, 256 * 1024);
    await c.waitForClose(30_000);
    expect(c.text()).toBe('-ERR Protocol error: bulk length 67108864 exceeds limit 16777216\r\n');
    const growth = peakRssBytes(main.pid) - before;
    console.log(`[hostile] ${name}: bulk over the limit: ${mib(sent)} written before the close, peak RSS growth ${mib(growth)}`);
    expect(growth, `peak RSS grew by ${mib(growth)}`).toBeLessThan(RSS_BOUND);
    await expectAlive(main);
    await expectServesData(main, 'hostile:after-bulk');
  });

  it('a huge array header (*999999999999) gets -ERR and a close, and nothing is preallocated', async () => {
    const { main } = target(name);
    await assertServing(main.port);
    const before = rssBytes(main.pid);
    resetPeakRss(main.pid);
    const c = await RawConnection.connect(main.port);
    c.socket.write('*999999999999\r\n');
    const sent = await c.stream(32 * MiB, 256 * 1024);
    await c.waitForClose(30_000);
    expect(c.text()).toBe('-ERR Protocol error: multibulk length 999999999999 exceeds limit 1048576\r\n');
    const growth = peakRssBytes(main.pid) - before;
    console.log(`[hostile] ${name}: *999999999999: ${mib(sent)} written before the close, peak RSS growth ${mib(growth)}`);
    expect(growth).toBeLessThan(RSS_BOUND);
    await expectAlive(main);
  });

  it('malformed RESP framing gets one -ERR Protocol error and a close; the process keeps serving', async () => {
    const { main } = target(name);
    const cases: [string, Buffer | string, string][] = [
      ['negative bulk length', '*1\r\n$-7\r\n', 'invalid bulk length'],
      ['nested arrays', '*1\r\n'.repeat(10_000), "expected '$', got '*'"],
      ['an integer element', '*2\r\n$3\r\nGET\r\n:5\r\n', "expected '$', got ':'"],
      ['a bulk string too long for its length', '*1\r\n$4\r\nPINGPONG\r\n', 'bulk string not terminated by CRLF'],
      ['a count that is not a number', '*abc\r\n', 'invalid multibulk length'],
      ['a bulk length that is not a number', '*1\r\n$1x\r\n', 'invalid bulk length'],
      ['a 20-digit bulk length', '*1\r\n$99999999999999999999\r\n', 'invalid bulk length'],
      ['a binary element marker', Buffer.from([0x2a, 0x31, 0x0d, 0x0a, 0xff, 0x0d, 0x0a]), "expected '$', got '\\xff'"],
    ];
    for (const [what, bytes, reason] of cases) {
      const got = await sendUntilClosed(main.port, bytes);
      expect(got, what).toBe(`-ERR Protocol error: ${reason}\r\n`);
    }
    // Requests before the bad frame are answered first, in order.
    const got = await sendUntilClosed(main.port, Buffer.concat([resp('PING'), Buffer.from('PING\n'), Buffer.from('*1\r\n$-7\r\n')]));
    expect(got).toBe('+PONG\r\nPONG\n-ERR Protocol error: invalid bulk length\r\n');
    // `*0` and `*-1` are skipped without a reply, as Redis does; the connection stays open.
    const c = await RawConnection.connect(main.port);
    c.socket.write('*0\r\n*-1\r\n');
    expect(await c.askResp('PING')).toBe('+PONG\r\n');
    c.destroy();
    await expectAlive(main);
  });

  it('random bytes never crash the process, and it keeps accepting new connections', async () => {
    const { main } = target(name);
    const seed = 0x5eed0000 + (name === 'kv-proxy' ? 1 : 0);
    const rand = prng(seed);
    const byte = (): number => Math.floor(rand() * 256);
    const streams: Buffer[] = [];
    for (let i = 0; i < 24; i++) {
      const body = Buffer.alloc(16 * 1024 + Math.floor(rand() * 48 * 1024));
      for (let j = 0; j < body.length; j++) body[j] = byte();
      if (i % 3 === 1) body[0] = 0x2a; // start in RESP
      if (i % 3 === 2) {
        // Lines of random tokens, some of them known command names with random arguments (not
        // ADD/REMOVE: random bytes could spell a resolvable host name).
        const words = ['GET', 'SET', 'DEL', 'MGET', 'MSET', 'EXISTS', 'PING', 'INFO', 'NODES', 'CONFIG', 'CLIENT', 'HELP', 'COMMAND', 'SELECT'];
        let text = '';
        while (text.length < body.length) {
          text += words[Math.floor(rand() * words.length)]!;
          const n = Math.floor(rand() * 4);
          for (let k = 0; k < n; k++) text += ` ${Buffer.from([byte(), byte(), byte()].map((b) => (b === 0x0a ? 0x20 : b))).toString('latin1')}`;
          text += rand() < 0.9 ? '\n' : '\r\n';
        }
        streams.push(Buffer.from(text, 'latin1'));
      } else {
        streams.push(body);
      }
    }
    const replies: string[] = [];
    await Promise.all(
      streams.map(async (bytes, i) => {
        const c = await RawConnection.connect(main.port);
        try {
          // Random chunk boundaries; then shut our side. The process answers what it read and
          // closes, so the close proves every byte was consumed.
          for (let at = 0; at < bytes.length; ) {
            const n = 1 + Math.floor(rand() * 8192);
            c.socket.write(bytes.subarray(at, at + n));
            at += n;
          }
          c.socket.end();
          await c.waitForClose(30_000);
          replies[i] = c.text();
        } catch (err) {
          throw new Error(`stream ${i} (seed ${seed}): ${(err as Error).message}`);
        } finally {
          c.destroy();
        }
      }),
    );
    // Every stream was answered, and garbage was answered with errors.
    for (const [i, r] of replies.entries()) expect(r.length, `bytes received for stream ${i} (seed ${seed})`).toBeGreaterThan(0);
    const errors = replies.join('').match(/^-?ERR [^\r\n]*/gm) ?? [];
    console.log(`[hostile] ${name}: ${streams.length} random streams (seed ${seed}) got ${errors.length} ERR replies, e.g. ${JSON.stringify([...new Set(errors.map((e) => e.slice(0, 40)))].slice(0, 4))}`);
    expect(errors.length).toBeGreaterThan(streams.length);
    await expectAlive(main);
    await expectServesData(main, 'hostile:after-random');
  });

  it('invalid UTF-8 in command names, keys and values: ERR for the name, bytes kept as they are', async () => {
    const { main } = target(name);
    const c = await RawConnection.connect(main.port);
    const key = Buffer.from([0x6b, 0xff, 0xfe, 0xc3, 0x28]); // k, two bytes never valid in UTF-8, a broken pair
    const value = Buffer.from([0xed, 0xa0, 0x80, 0xf8, 0x88, 0x80, 0x80, 0x80, 0xc0, 0xaf, 0x41]); // surrogate, 5-byte form, overlong '/'
    // Text protocol.
    c.socket.write(Buffer.concat([Buffer.from([0xff, 0xfe, 0x47]), Buffer.from(' x\n')]));
    expect(await c.line()).toBe("ERR unknown command '??G'");
    c.socket.write(Buffer.concat([Buffer.from('SET '), key, Buffer.from(' '), value, Buffer.from('\nGET '), key, Buffer.from('\n')]));
    expect(await c.line()).toBe('OK');
    expect(Buffer.from(await c.line(), 'latin1')).toEqual(Buffer.concat([Buffer.from('VALUE '), value]));
    // RESP, with the bytes the text protocol cannot carry (NUL, CR, LF) as well.
    const rkey = Buffer.concat([key, Buffer.from([0x00, 0x0d, 0x0a])]);
    c.socket.write(resp(Buffer.from([0xc0, 0xaf, 0xff])));
    expect(await c.reply()).toBe("-ERR unknown command '???'\r\n");
    c.socket.write(Buffer.concat([resp('SET', rkey, value), resp('GET', rkey), resp('EXISTS', key, rkey)]));
    expect(await c.reply()).toBe('+OK\r\n');
    expect(await c.replyBytes()).toEqual(Buffer.concat([Buffer.from(`$${value.length}\r\n`), value, Buffer.from('\r\n')]));
    expect(await c.reply()).toBe(':2\r\n');
    c.destroy();
    await expectAlive(main);
  });

  it('a text line over --max-line gets ERR line too long and the next line on the connection works', async () => {
    const { main, small } = target(name);
    // Default limit: 64 KiB.
    const c = await RawConnection.connect(main.port);
    c.socket.write(`SET hostile:long ${'v'.repeat(70_000)}\nPING\n`);
    expect(await c.line()).toBe('ERR line too long (limit 65536 bytes)');
    expect(await c.line()).toBe('PONG');
    // Exactly at the limit (the line ending does not count) is accepted.
    const atLimit = `SET hostile:limit ${'w'.repeat(65_536 - 'SET hostile:limit '.length)}`;
    c.socket.write(`${atLimit}\r\nGET hostile:limit\n`);
    expect(await c.line()).toBe('OK');
    expect((await c.line()).length).toBe('VALUE '.length + 65_536 - 'SET hostile:limit '.length);
    c.destroy();

    // --max-line 1kb: the same flag changes the bound.
    const s = await RawConnection.connect(small.port);
    s.socket.write(`SET hostile:small ${'v'.repeat(1500)}\nPING\n`);
    expect(await s.line()).toBe('ERR line too long (limit 1024 bytes)');
    expect(await s.line()).toBe('PONG');
    // A line that arrives in pieces, over the limit before its newline is there.
    s.socket.write(`GET ${'k'.repeat(600)}`);
    s.socket.write('k'.repeat(600));
    s.socket.write('\nPING\n');
    expect(await s.line()).toBe('ERR line too long (limit 1024 bytes)');
    expect(await s.line()).toBe('PONG');
    // Under the limit works, and the default-limit process accepts what the small one refuses.
    const value = 'u'.repeat(1000);
    expect(await s.ask(`SET hostile:small ${value}`, 'GET hostile:small')).toEqual(['OK', `VALUE ${value}`]);
    s.destroy();
    const big = 'b'.repeat(1500);
    const m = await RawConnection.connect(main.port);
    expect(await m.ask(`SET hostile:big ${big}`, 'GET hostile:big')).toEqual(['OK', `VALUE ${big}`]);
    m.destroy();
  });

  it('a line of exactly --max-line bytes whose CRLF arrives split (CR first) is accepted', async () => {
    const { small } = target(name);
    const s = await RawConnection.connect(small.port);
    const line = `SET hostile:edge ${'e'.repeat(1024 - 'SET hostile:edge '.length)}`;
    expect(line.length).toBe(1024);
    // PING in the same write makes its reply proof that the partial line (ending in CR) was read.
    s.socket.write(`PING\n${line}\r`);
    expect(await s.line()).toBe('PONG');
    s.socket.write('\nGET hostile:edge\n');
    // The line ending does not count toward the limit (docs/protocol.md, Limits).
    expect(await s.line()).toBe('OK');
    expect(await s.line()).toBe(`VALUE ${line.slice('SET hostile:edge '.length)}`);
    s.destroy();
  });

  it('--max-bulk, --max-args and the RESP header limit follow their flags', async () => {
    const { small } = target(name);
    expect(await sendUntilClosed(small.port, '*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5000\r\n')).toBe('-ERR Protocol error: bulk length 5000 exceeds limit 4096\r\n');
    expect(await sendUntilClosed(small.port, resp('MGET', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'))).toBe('-ERR Protocol error: multibulk length 9 exceeds limit 8\r\n');
    expect(await sendUntilClosed(small.port, `*${'1'.repeat(1100)}`)).toBe('-ERR Protocol error: too big multibulk header\r\n');
    expect(await sendUntilClosed(small.port, `*1\r\n$${'1'.repeat(1100)}`)).toBe('-ERR Protocol error: too big bulk header\r\n');
    // Within the limits: a 4096-byte value and 8 arguments are fine.
    const c = await RawConnection.connect(small.port);
    const value = Buffer.alloc(4096, 0x7a);
    expect(await c.askResp('SET', 'hostile:bulk', value)).toBe('+OK\r\n');
    expect(await c.askResp('GET', 'hostile:bulk')).toBe(`$4096\r\n${value.toString('latin1')}\r\n`);
    expect(await c.askResp('MGET', 'hostile:bulk', 'b', 'c', 'd', 'e', 'f', 'g')).toMatch(/^\*7\r\n\$4096\r\n/);
    c.destroy();
    // And the default-limit process takes what the small one refuses.
    const { main } = target(name);
    const m = await RawConnection.connect(main.port);
    expect(await m.askResp('SET', 'hostile:bulk5000', Buffer.alloc(5000, 0x79))).toBe('+OK\r\n');
    const nine = Array.from({ length: 9 }, (_, i) => `hostile:none:${i}`);
    expect(await m.askResp('MGET', ...nine)).toBe(`*9\r\n${'$-1\r\n'.repeat(9)}`);
    m.destroy();
    await expectAlive(small);
  });
});

describe('kv-server: the commands that move data', () => {
  it('RANGEPUSH and DROPRANGE with malformed arguments get ERR and change nothing', async () => {
    const { main } = target('kv-server');
    const c = await RawConnection.connect(main.port);
    expect(await c.ask('SET hostile:moving kept')).toEqual(['OK']);
    const bad = ['DROPRANGE', 'DROPRANGE x 0 0', 'DROPRANGE 0 0', 'DROPRANGE 0 1 2 3', 'DROPRANGE 4294967296 0 0', 'DROPRANGE 0 -1 5', 'DROPRANGE 0 0 99999999999', 'RANGEPUSH', 'RANGEPUSH START', 'RANGEPUSH GO t', 'RANGEPUSH START t', 'RANGEPUSH START t x 0 1 127.0.0.1:1 0 0 0',
      'RANGEPUSH START t 0 0 1 127.0.0.1:1 0 0 0', 'RANGEPUSH START t 100001 0 1 127.0.0.1:1 0 0 0', 'RANGEPUSH START t 10 -1 1 127.0.0.1:1 0 0 0',
      'RANGEPUSH START t 10 0 0 0 0 0', 'RANGEPUSH START t 10 0 1 not-an-address 0 0 0', 'RANGEPUSH START t 10 0 1 127.0.0.1:0 0 0 0',
      'RANGEPUSH START t 10 0 1 127.0.0.1:1 0 0', 'RANGEPUSH START t 10 0 1 127.0.0.1:1 0 0 1', 'RANGEPUSH START t 10 0 1 127.0.0.1:1 0 4294967296 0',
      'RANGEPUSH START t 10 0 2000 127.0.0.1:1 0 0 0', 'RANGEPUSH WAIT t extra', 'RANGEPUSH WAIT never-started', 'RANGEPUSH STOP t extra'];
    const replies = await c.ask(...bad);
    replies.forEach((reply, i) => expect(reply, bad[i]).toMatch(/^ERR /));
    expect(await c.ask('GET hostile:moving', 'DBSIZE')).toEqual(['VALUE kept', expect.stringMatching(/^\d+$/)]);
    // None of them started a push.
    expect(await c.askResp('INFO', 'stats')).toMatch(/migration_pushes_active:0\r\n/);
    c.destroy();
    await expectAlive(main);
  });
});
