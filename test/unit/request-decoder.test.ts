import { describe, expect, it, vi } from 'vitest';
import { Decode, RequestDecoder, tokenize, type RequestDecoderOptions } from '../../src/common/protocol/request-decoder.js';
import { TEXT_REST } from '../../src/common/commands/table.js';
import { DEFAULT_LIMITS, type Limits } from '../../src/common/limits.js';
import { allFeedings, byteByByte, inOneReadBuffer, splitAt, whole, type Feeding } from './chunking.js';

type Event =
  | { kind: 'request'; args: string[]; resp: boolean }
  | { kind: 'error'; error: string; resp: boolean }
  | { kind: 'fatal'; error: string; resp: boolean };

interface Decoded {
  events: Event[];
  /** Largest `buffered` seen after the decoder was drained (next() returned NeedMore). */
  maxBufferedAfterNext: number;
  finalBuffered: number;
}

/**
 * Push each chunk, then pull until NeedMore. Each chunk arrives in one reused read buffer, as
 * ClientConnection's do: after own(), the buffer is scribbled over before the next read, so a
 * decoder still holding a view into it would decode garbage. Args are copied out at once.
 */
function decode(chunks: readonly Buffer[], options: RequestDecoderOptions = { textRest: TEXT_REST }): Decoded {
  const decoder = new RequestDecoder(options);
  const events: Event[] = [];
  let maxBufferedAfterNext = 0;
  for (const read of inOneReadBuffer(chunks)) {
    decoder.push(read);
    for (;;) {
      const status = decoder.next();
      if (status === Decode.NeedMore) break;
      if (status === Decode.Request) events.push({ kind: 'request', args: decoder.args.map((a) => a.toString('latin1')), resp: decoder.resp });
      else if (status === Decode.Error) events.push({ kind: 'error', error: decoder.error, resp: decoder.resp });
      else events.push({ kind: 'fatal', error: decoder.error, resp: decoder.resp });
    }
    decoder.own();
    maxBufferedAfterNext = Math.max(maxBufferedAfterNext, decoder.buffered);
  }
  return { events, maxBufferedAfterNext, finalBuffered: decoder.buffered };
}

function text(...args: string[]): Event {
  return { kind: 'request', args, resp: false };
}

function resp(...args: string[]): Event {
  return { kind: 'request', args, resp: true };
}

/** A RESP array of bulk strings, built by hand so the decoder is not tested against our own encoder. */
function respFrame(...args: string[]): string {
  return `*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(a, 'latin1')}\r\n${a}\r\n`).join('');
}

interface Fixture {
  name: string;
  input: string;
  expected: Event[];
  limits?: Limits;
}

const SMALL: Limits = { maxLineBytes: 16, maxBulkBytes: 64, maxArgs: 8 };

const REQUEST_FIXTURES: Fixture[] = [
  { name: 'text line, LF', input: 'GET a\n', expected: [text('GET', 'a')] },
  { name: 'text line, CRLF', input: 'GET a\r\n', expected: [text('GET', 'a')] },
  { name: 'SET takes the rest of the line', input: 'SET a hello world\n', expected: [text('SET', 'a', 'hello world')] },
  { name: 'SET rest keeps inner and trailing blanks', input: 'SET a  hello \t world  \r\n', expected: [text('SET', 'a', 'hello \t world  ')] },
  { name: 'set (lower case) takes the rest too', input: 'set k v w\n', expected: [text('set', 'k', 'v w')] },
  { name: 'SET with tabs between its arguments', input: 'SET\ta\thello world\n', expected: [text('SET', 'a', 'hello world')] },
  { name: 'SET with no value yet', input: 'SET a\n', expected: [text('SET', 'a')] },
  { name: 'other commands split on every blank', input: 'DEL a  b\t\tc \n', expected: [text('DEL', 'a', 'b', 'c')] },
  { name: 'leading blanks before the command', input: '  \tPING\n', expected: [text('PING')] },
  { name: 'blank lines are skipped', input: '\n\r\n   \n\t\r\nPING\n\n', expected: [text('PING')] },
  { name: 'pipelined text lines, mixed endings', input: 'GET a\nGET b\r\nDEL c\n', expected: [text('GET', 'a'), text('GET', 'b'), text('DEL', 'c')] },
  { name: 'an unterminated last line waits', input: 'GET a\nGET b', expected: [text('GET', 'a')] },
  { name: 'text line of exactly the line limit (LF)', input: `GET ${'x'.repeat(12)}\n`, expected: [text('GET', 'x'.repeat(12))], limits: SMALL },
  { name: 'RESP GET', input: respFrame('GET', 'a'), expected: [resp('GET', 'a')] },
  { name: 'RESP SET with spaces in the value', input: respFrame('SET', 'k', 'hello world'), expected: [resp('SET', 'k', 'hello world')] },
  {
    name: 'RESP binary value with CRLF, LF and NUL inside',
    input: respFrame('SET', 'k\r\n', 'a\r\nb\nc\0d\r'),
    expected: [resp('SET', 'k\r\n', 'a\r\nb\nc\0d\r')],
  },
  { name: 'RESP value made only of CRLFs', input: respFrame('SET', 'k', '\r\n\r\n'), expected: [resp('SET', 'k', '\r\n\r\n')] },
  { name: 'RESP all 256 byte values', input: respFrame('SET', 'k', String.fromCharCode(...Array.from({ length: 256 }, (_, i) => i))), expected: [resp('SET', 'k', String.fromCharCode(...Array.from({ length: 256 }, (_, i) => i)))] },
  { name: 'RESP empty bulk', input: respFrame('SET', 'k', ''), expected: [resp('SET', 'k', '')] },
  { name: 'RESP empty key and value', input: '*3\r\n$3\r\nSET\r\n$0\r\n\r\n$0\r\n\r\n', expected: [resp('SET', '', '')] },
  { name: 'RESP *0 and *-1 are ignored', input: `*0\r\n*-1\r\n${respFrame('PING')}*0\r\n`, expected: [resp('PING')] },
  { name: 'RESP pipelined', input: respFrame('SET', 'a', '1') + respFrame('GET', 'a') + respFrame('DEL', 'a', 'b'), expected: [resp('SET', 'a', '1'), resp('GET', 'a'), resp('DEL', 'a', 'b')] },
  {
    name: 'RESP value longer than the line limit',
    input: respFrame('SET', 'k', 'v'.repeat(40)),
    expected: [resp('SET', 'k', 'v'.repeat(40))],
    limits: SMALL,
  },
  { name: 'RESP bulk of exactly maxBulkBytes', input: respFrame('SET', 'k', 'b'.repeat(64)), expected: [resp('SET', 'k', 'b'.repeat(64))], limits: SMALL },
  { name: 'RESP array of exactly maxArgs', input: respFrame('DEL', ...'abcdefg'.split('')), expected: [resp('DEL', ...'abcdefg'.split(''))], limits: SMALL },
  {
    name: 'text and RESP mixed on one stream',
    input: `GET a\n${respFrame('SET', 'b', 'x y')}SET c hello world\r\n\n${respFrame('GET', 'c')}PING\n`,
    expected: [text('GET', 'a'), resp('SET', 'b', 'x y'), text('SET', 'c', 'hello world'), resp('GET', 'c'), text('PING')],
  },
];

const ERROR_FIXTURES: Fixture[] = [
  {
    name: 'array length beyond maxArgs',
    input: '*999999999999\r\n',
    expected: [{ kind: 'fatal', error: `ERR Protocol error: multibulk length 999999999999 exceeds limit ${DEFAULT_LIMITS.maxArgs}`, resp: true }],
  },
  { name: 'array length not a number', input: '*abc\r\n', expected: [{ kind: 'fatal', error: 'ERR Protocol error: invalid multibulk length', resp: true }] },
  { name: 'empty array length', input: '*\r\n', expected: [{ kind: 'fatal', error: 'ERR Protocol error: invalid multibulk length', resp: true }] },
  { name: 'negative bulk length', input: '*1\r\n$-7\r\n', expected: [{ kind: 'fatal', error: 'ERR Protocol error: invalid bulk length', resp: true }] },
  { name: 'nil bulk inside a request', input: '*1\r\n$-1\r\n', expected: [{ kind: 'fatal', error: 'ERR Protocol error: invalid bulk length', resp: true }] },
  { name: 'bulk length not a number', input: '*1\r\n$x\r\n', expected: [{ kind: 'fatal', error: 'ERR Protocol error: invalid bulk length', resp: true }] },
  {
    name: 'bulk over maxBulkBytes',
    input: `*2\r\n$3\r\nSET\r\n$${DEFAULT_LIMITS.maxBulkBytes + 1}\r\n`,
    expected: [{ kind: 'fatal', error: `ERR Protocol error: bulk length ${DEFAULT_LIMITS.maxBulkBytes + 1} exceeds limit ${DEFAULT_LIMITS.maxBulkBytes}`, resp: true }],
  },
  { name: 'nested array', input: '*1\r\n*1\r\n', expected: [{ kind: 'fatal', error: "ERR Protocol error: expected '$', got '*'", resp: true }] },
  { name: 'non-printable byte where $ belongs', input: '*1\r\n\x01\r\n', expected: [{ kind: 'fatal', error: "ERR Protocol error: expected '$', got '\\x01'", resp: true }] },
  { name: 'bulk not followed by CRLF', input: '*1\r\n$3\r\nGETxx', expected: [{ kind: 'fatal', error: 'ERR Protocol error: bulk string not terminated by CRLF', resp: true }] },
  { name: 'bulk followed by CR and not LF', input: '*1\r\n$3\r\nGET\rX', expected: [{ kind: 'fatal', error: 'ERR Protocol error: bulk string not terminated by CRLF', resp: true }] },
  {
    name: 'requests before a fatal frame are delivered; nothing after it',
    input: `GET a\n${respFrame('GET', 'b')}*abc\r\nGET c\n${respFrame('GET', 'd')}`,
    expected: [text('GET', 'a'), resp('GET', 'b'), { kind: 'fatal', error: 'ERR Protocol error: invalid multibulk length', resp: true }],
  },
  {
    name: 'small limits: bulk one over maxBulkBytes',
    input: '*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$65\r\n',
    expected: [{ kind: 'fatal', error: 'ERR Protocol error: bulk length 65 exceeds limit 64', resp: true }],
    limits: SMALL,
  },
  {
    name: 'small limits: array one over maxArgs',
    input: '*9\r\n',
    expected: [{ kind: 'fatal', error: 'ERR Protocol error: multibulk length 9 exceeds limit 8', resp: true }],
    limits: SMALL,
  },
  {
    name: 'text line over the line limit is skipped; the next request decodes',
    input: `GET ${'x'.repeat(30)}\nGET b\n`,
    expected: [{ kind: 'error', error: 'ERR line too long (limit 16 bytes)', resp: false }, text('GET', 'b')],
    limits: SMALL,
  },
  {
    name: 'over-long text line between good ones (CRLF)',
    input: `GET a\r\nSET k ${'v'.repeat(40)}\r\n${respFrame('GET', 'k')}`,
    expected: [text('GET', 'a'), { kind: 'error', error: 'ERR line too long (limit 16 bytes)', resp: false }, resp('GET', 'k')],
    limits: SMALL,
  },
];

function optionsFor(f: Fixture): RequestDecoderOptions {
  return f.limits === undefined ? { textRest: TEXT_REST } : { textRest: TEXT_REST, limits: f.limits };
}

function expectSameForAllFeedings(f: Fixture): void {
  const bytes = Buffer.from(f.input, 'latin1');
  for (const feeding of allFeedings(bytes)) {
    const got = decode(feeding.chunks, optionsFor(f)).events;
    expect(got, `${f.name}, fed ${feeding.name}`).toEqual(f.expected);
  }
}

describe('RequestDecoder: requests, fed whole, byte by byte and split at every offset', () => {
  for (const f of REQUEST_FIXTURES) it(f.name, () => expectSameForAllFeedings(f));

  it('all request fixtures concatenated into one stream', () => {
    // Each fixture's limits differ, so use the default limits and only the fixtures that fit them.
    const fitting = REQUEST_FIXTURES.filter((f) => f.limits === undefined && !f.input.endsWith('GET b'));
    expectSameForAllFeedings({
      name: 'concatenated',
      input: fitting.map((f) => f.input).join(''),
      expected: fitting.flatMap((f) => f.expected),
    });
  });
});

describe('RequestDecoder: malformed input, fed whole, byte by byte and split at every offset', () => {
  for (const f of ERROR_FIXTURES) it(f.name, () => expectSameForAllFeedings(f));
});

describe('RequestDecoder: bounds', () => {
  it('rejects an oversized bulk from its header alone, before any of the body arrives', () => {
    const decoder = new RequestDecoder();
    decoder.push(Buffer.from(`*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$${DEFAULT_LIMITS.maxBulkBytes + 1}\r\n`, 'latin1'));
    expect(decoder.next()).toBe(Decode.Fatal);
    expect(decoder.error).toContain('exceeds limit');
    expect(decoder.resp).toBe(true);
    expect(decoder.buffered).toBe(0);
    // The body that follows is not buffered: the connection is being closed.
    const body = Buffer.alloc(1024 * 1024, 0x61);
    for (let i = 0; i < 4; i++) {
      decoder.push(body);
      expect(decoder.next()).toBe(Decode.NeedMore);
      expect(decoder.buffered).toBe(0);
    }
  });

  it('a huge bulk header split across pushes is still rejected before its body', () => {
    const header = Buffer.from(`*2\r\n$3\r\nGET\r\n$${512 * 1024 * 1024}\r\n`, 'latin1');
    for (const feeding of [whole(header), byteByByte(header)]) {
      const got = decode([...feeding.chunks, Buffer.alloc(64 * 1024)]);
      expect(got.events, feeding.name).toEqual([
        { kind: 'fatal', error: `ERR Protocol error: bulk length ${512 * 1024 * 1024} exceeds limit ${DEFAULT_LIMITS.maxBulkBytes}`, resp: true },
      ]);
      expect(got.finalBuffered).toBe(0);
    }
  });

  it('a RESP header line that never ends is fatal once it passes the line limit', () => {
    const got = decode([Buffer.from(`*${'1'.repeat(40)}`, 'latin1')], { limits: SMALL });
    expect(got.events).toEqual([{ kind: 'fatal', error: 'ERR Protocol error: too big multibulk header', resp: true }]);
    const bulkHeader = decode([Buffer.from(`*1\r\n$${'1'.repeat(40)}`, 'latin1')], { limits: SMALL });
    expect(bulkHeader.events).toEqual([{ kind: 'fatal', error: 'ERR Protocol error: too big bulk header', resp: true }]);
  });

  it('an over-long text line is an Error (not Fatal) and the stream stays usable', () => {
    const limit = DEFAULT_LIMITS.maxLineBytes;
    const tooLong = `ERR line too long (limit ${limit} bytes)`;
    // limit + 2 bytes and no LF yet: too long even if CR LF came next, so an Error at once.
    const decoder = new RequestDecoder({ textRest: TEXT_REST });
    decoder.push(Buffer.alloc(limit + 2, 0x78));
    expect(decoder.next()).toBe(Decode.Error);
    expect(decoder.error).toBe(tooLong);
    expect(decoder.resp).toBe(false);
    expect(decoder.next()).toBe(Decode.NeedMore);
    decoder.push(Buffer.from('still the long line\nSET a hello world\n', 'latin1'));
    expect(decoder.next()).toBe(Decode.Request);
    expect(decoder.args.map((a) => a.toString())).toEqual(['SET', 'a', 'hello world']);
    expect(decoder.next()).toBe(Decode.NeedMore);
    expect(decoder.buffered).toBe(0);

    // limit + 1 bytes may still be limit bytes and a CR: held until the LF shows they are not.
    const late = new RequestDecoder({ textRest: TEXT_REST });
    late.push(Buffer.alloc(limit + 1, 0x78));
    expect(late.next()).toBe(Decode.NeedMore);
    late.push(Buffer.from('\nGET a\n', 'latin1'));
    expect(late.next()).toBe(Decode.Error);
    expect(late.error).toBe(tooLong);
    expect(late.resp).toBe(false);
    expect(late.next()).toBe(Decode.Request);
    expect(late.args.map((a) => a.toString())).toEqual(['GET', 'a']);
    expect(late.next()).toBe(Decode.NeedMore);
    expect(late.buffered).toBe(0);

    // One byte over the limit is an Error however the line is split, with LF or CR LF; the
    // request after it decodes.
    const small = `ERR line too long (limit ${SMALL.maxLineBytes} bytes)`;
    const over = `GET ${'x'.repeat(SMALL.maxLineBytes - 3)}`;
    expect(over).toHaveLength(SMALL.maxLineBytes + 1);
    for (const ending of ['\n', '\r\n']) {
      for (const feeding of allFeedings(Buffer.from(`${over}${ending}GET b\n`, 'latin1'))) {
        expect(decode(feeding.chunks, { textRest: TEXT_REST, limits: SMALL }).events, `${JSON.stringify(ending)}, fed ${feeding.name}`).toEqual([
          { kind: 'error', error: small, resp: false },
          text('GET', 'b'),
        ]);
      }
    }
  });

  it('64 MiB without a newline, in 64 KiB chunks, keeps buffered under twice the line limit', () => {
    const limit = DEFAULT_LIMITS.maxLineBytes;
    const chunkSize = 64 * 1024;
    const chunk = Buffer.alloc(chunkSize, 0x61);
    const decoder = new RequestDecoder({ textRest: TEXT_REST });
    const statuses: Decode[] = [];
    let maxAfterPush = 0;
    let maxAfterNext = 0;
    for (let sent = 0; sent < 64 * 1024 * 1024; sent += chunkSize) {
      decoder.push(chunk);
      maxAfterPush = Math.max(maxAfterPush, decoder.buffered);
      for (let s = decoder.next(); s !== Decode.NeedMore; s = decoder.next()) statuses.push(s);
      maxAfterNext = Math.max(maxAfterNext, decoder.buffered);
    }
    expect(statuses).toEqual([Decode.Error]);
    expect(maxAfterNext).toBeLessThan(2 * limit);
    expect(maxAfterPush).toBeLessThanOrEqual(limit + chunkSize);
    // The flood ends with a newline; the request after it decodes normally.
    decoder.push(Buffer.from('\nGET a\n', 'latin1'));
    expect(decoder.next()).toBe(Decode.Request);
    expect(decoder.args.map((a) => a.toString())).toEqual(['GET', 'a']);
    expect(decoder.next()).toBe(Decode.NeedMore);
    expect(decoder.buffered).toBe(0);
  });

  it('a 60 KB text line dribbled one byte per read decodes in well under a second', () => {
    // Each read used to walk every chunk held so far: this line cost ~5 s of CPU (quadratic),
    // one client could keep a core busy that way. Now each chunk is looked at once: ~30-120 ms
    // here, most of it allocating and collecting the 60,000 one-byte chunks.
    const line = Buffer.from(`SET k ${'x'.repeat(60_000)}\n`, 'latin1');
    const decoder = new RequestDecoder({ textRest: TEXT_REST });
    const args: string[][] = [];
    const t = performance.now();
    for (let i = 0; i < line.length; i++) {
      decoder.push(line.subarray(i, i + 1));
      while (decoder.next() === Decode.Request) args.push(decoder.args.map((a) => (a.length > 8 ? `${a.length} bytes` : a.toString())));
      decoder.own();
    }
    const ms = performance.now() - t;
    expect(args).toEqual([['SET', 'k', '60000 bytes']]);
    expect(ms, 'ms to decode the dribbled line').toBeLessThan(1000);
  });

  it('own() copies each byte of a large request once, however many reads it spans', () => {
    // A 4 MiB SET read 64 KiB at a time into one reused buffer: copying all that is held at each
    // read would copy ~128 MiB; copying only what arrived since the last own() copies 4 MiB.
    const value = Buffer.alloc(4 * 1024 * 1024, 0x76);
    const frame = Buffer.concat([Buffer.from(`*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$${value.length}\r\n`), value, Buffer.from('\r\n')]);
    const decoder = new RequestDecoder();
    const reads: Buffer[] = [];
    for (let at = 0; at < frame.length; at += 64 * 1024) reads.push(frame.subarray(at, at + 64 * 1024));
    const from = vi.spyOn(Buffer, 'from');
    let copied = 0;
    let args: string[] = [];
    try {
      for (const read of inOneReadBuffer(reads)) {
        decoder.push(read);
        if (decoder.next() === Decode.Request) args = decoder.args.map((a) => (a.length > 16 ? `${a.length} bytes of ${a.every((b) => b === 0x76) ? 'v' : '?'}` : a.toString()));
        decoder.own();
      }
      for (const call of from.mock.calls) copied += (call[0] as Buffer).length;
    } finally {
      from.mockRestore();
    }
    expect(args).toEqual(['SET', 'k', `${value.length} bytes of v`]);
    expect(copied).toBeGreaterThan(0);
    expect(copied).toBeLessThanOrEqual(frame.length);
  });

  it('a text line of exactly the line limit, ending in CRLF, is accepted however it is split', () => {
    // The limit counts the line's bytes; the CR before LF is part of the line ending, and a
    // whole-buffer push accepts this line. A split that lands between CR and LF must agree.
    const line = Buffer.from(`GET ${'x'.repeat(12)}\r\n`, 'latin1');
    const expected = [text('GET', 'x'.repeat(12))];
    const feedings: Feeding[] = [whole(line), splitAt(line, line.length - 1), byteByByte(line)];
    for (const feeding of feedings) {
      expect(decode(feeding.chunks, { textRest: TEXT_REST, limits: SMALL }).events, feeding.name).toEqual(expected);
    }
  });

  it('does nothing after Fatal: next() says NeedMore and pushes are dropped', () => {
    const decoder = new RequestDecoder();
    decoder.push(Buffer.from('*1\r\n*1\r\n', 'latin1'));
    expect(decoder.next()).toBe(Decode.Fatal);
    decoder.push(Buffer.from('GET a\n', 'latin1'));
    expect(decoder.next()).toBe(Decode.NeedMore);
    expect(decoder.buffered).toBe(0);
  });
});

describe('tokenize', () => {
  const line = (s: string): string[] => {
    const b = Buffer.from(s, 'latin1');
    return tokenize(b, 0, b.length, TEXT_REST).map((a) => a.toString('latin1'));
  };

  it('splits on spaces and tabs, dropping empty tokens', () => {
    expect(line(' a\t b  c\t')).toEqual(['a', 'b', 'c']);
    expect(line('')).toEqual([]);
    expect(line(' \t ')).toEqual([]);
  });

  it('gives a textRest command its last argument as the rest of the line', () => {
    expect(line('SET key  hello world ')).toEqual(['SET', 'key', 'hello world ']);
    expect(line('SeT key v')).toEqual(['SeT', 'key', 'v']);
  });

  it('without a textRest table, SET splits like everything else', () => {
    const b = Buffer.from('SET a hello world', 'latin1');
    expect(tokenize(b, 0, b.length, new Map()).map((a) => a.toString())).toEqual(['SET', 'a', 'hello', 'world']);
  });

  it('honours start and end offsets', () => {
    const b = Buffer.from('xxGET a\r\n', 'latin1');
    expect(tokenize(b, 2, 7, TEXT_REST).map((a) => a.toString())).toEqual(['GET', 'a']);
  });
});
