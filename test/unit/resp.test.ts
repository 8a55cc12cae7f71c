import { describe, expect, it } from 'vitest';
import { bulkLength, encodeRespReply, encodeRespRequest, ReplyDecoder, writeBulk, writeRespReply, writeRespRequest } from '../../src/common/protocol/resp.js';
import { Decode, RequestDecoder } from '../../src/common/protocol/request-decoder.js';
import { ByteSink } from '../../src/common/protocol/byte-sink.js';
import { array, bulk, error, int, NIL, OK, PONG, simple, type Reply } from '../../src/common/protocol/reply.js';
import { allFeedings } from './chunking.js';

/** Push each chunk and pull every reply that is complete. */
function decodeReplies(chunks: readonly Buffer[], decoder = new ReplyDecoder()): Reply[] {
  const out: Reply[] = [];
  for (const chunk of chunks) {
    decoder.push(chunk);
    for (let r = decoder.next(); r !== undefined; r = decoder.next()) out.push(r);
  }
  return out;
}

function nested(depth: number, leaf: Reply): Reply {
  let r = leaf;
  for (let i = 0; i < depth; i++) r = array([r]);
  return r;
}

const BINARY = Buffer.from([0x00, 0x0d, 0x0a, 0x24, 0x2a, 0xff, 0x0a, 0x0d, 0x00]);

const ENCODINGS: { name: string; reply: Reply; wire: string }[] = [
  { name: 'simple OK', reply: OK, wire: '+OK\r\n' },
  { name: 'simple PONG', reply: PONG, wire: '+PONG\r\n' },
  { name: 'empty simple', reply: simple(''), wire: '+\r\n' },
  { name: 'error', reply: error('ERR unknown command'), wire: '-ERR unknown command\r\n' },
  { name: 'int 0', reply: int(0), wire: ':0\r\n' },
  { name: 'int 1', reply: int(1), wire: ':1\r\n' },
  { name: 'int large', reply: int(1234567890123), wire: ':1234567890123\r\n' },
  { name: 'int negative', reply: int(-42), wire: ':-42\r\n' },
  { name: 'bulk', reply: bulk('hello'), wire: '$5\r\nhello\r\n' },
  { name: 'empty bulk', reply: bulk(''), wire: '$0\r\n\r\n' },
  { name: 'bulk with CRLF and NUL', reply: bulk(BINARY), wire: `$9\r\n${BINARY.toString('latin1')}\r\n` },
  { name: 'nil bulk', reply: NIL, wire: '$-1\r\n' },
  { name: 'empty array', reply: array([]), wire: '*0\r\n' },
  { name: 'nil array', reply: array(null), wire: '*-1\r\n' },
  { name: 'array of mixed items', reply: array([bulk('a'), NIL, int(3), OK, error('ERR x')]), wire: '*5\r\n$1\r\na\r\n$-1\r\n:3\r\n+OK\r\n-ERR x\r\n' },
  { name: 'nested arrays', reply: array([array([bulk('a'), array([])]), array(null), bulk('b')]), wire: '*3\r\n*2\r\n$1\r\na\r\n*0\r\n*-1\r\n$1\r\nb\r\n' },
];

describe('encodeRespReply / writeRespReply', () => {
  for (const e of ENCODINGS) {
    it(`encodes ${e.name}`, () => {
      expect(encodeRespReply(e.reply).toString('latin1')).toBe(e.wire);
    });
  }

  it('simple strings and errors cannot carry CR or LF: line breaks become one space', () => {
    expect(encodeRespReply(simple('a\r\nb\nc\rd')).toString()).toBe('+a b c d\r\n');
    expect(encodeRespReply(error('ERR bad\r\n\r\nthing')).toString()).toBe('-ERR bad thing\r\n');
  });

  it('writes several replies into one sink, growing it from a tiny start', () => {
    const sink = new ByteSink(1);
    for (const e of ENCODINGS) writeRespReply(sink, e.reply);
    expect(sink.take().toString('latin1')).toBe(ENCODINGS.map((e) => e.wire).join(''));
    expect(sink.length).toBe(0);
    // The sink is reusable after take().
    writeRespReply(sink, OK);
    expect(sink.take().toString()).toBe('+OK\r\n');
  });

  it('a large bulk is written intact', () => {
    const big = Buffer.alloc(300_000);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 0xff;
    const wire = encodeRespReply(bulk(big));
    expect(wire.subarray(0, 9).toString()).toBe('$300000\r\n');
    expect(wire.subarray(9, 9 + big.length).equals(big)).toBe(true);
    expect(wire.subarray(wire.length - 2).toString()).toBe('\r\n');
  });
});

describe('ReplyDecoder round trip: encode, then decode whole, byte by byte and split at every offset', () => {
  for (const e of ENCODINGS) {
    it(e.name, () => {
      const wire = encodeRespReply(e.reply);
      for (const feeding of allFeedings(wire)) {
        expect(decodeReplies(feeding.chunks), `${e.name}, fed ${feeding.name}`).toEqual([e.reply]);
      }
    });
  }

  it('every reply type back to back on one stream', () => {
    const replies = ENCODINGS.map((e) => e.reply);
    const sink = new ByteSink(64);
    for (const r of replies) writeRespReply(sink, r);
    const wire = sink.take();
    for (const feeding of allFeedings(wire)) {
      expect(decodeReplies(feeding.chunks), feeding.name).toEqual(replies);
    }
  });

  it('decoded bulks are copies that do not alias the pushed chunk', () => {
    const wire = encodeRespReply(bulk('abc'));
    const decoder = new ReplyDecoder();
    decoder.push(wire);
    const reply = decoder.next();
    wire.fill(0x7a);
    expect(reply).toEqual(bulk('abc'));
  });

  it('accepts LF-only line endings on reply lines', () => {
    expect(decodeReplies([Buffer.from('+OK\n:5\n*1\n$1\r\nx\r\n')])).toEqual([OK, int(5), array([bulk('x')])]);
  });

  it('returns undefined until a reply is complete', () => {
    const decoder = new ReplyDecoder();
    decoder.push(Buffer.from('*2\r\n$3\r\nfoo\r\n'));
    expect(decoder.next()).toBeUndefined();
    decoder.push(Buffer.from(':7'));
    expect(decoder.next()).toBeUndefined();
    decoder.push(Buffer.from('\r\n'));
    expect(decoder.next()).toEqual(array([bulk('foo'), int(7)]));
    expect(decoder.next()).toBeUndefined();
  });
});

describe('ReplyDecoder nesting limit', () => {
  it('accepts arrays nested up to maxDepth (default 8) and rejects one level deeper', () => {
    const ok = nested(8, bulk('x'));
    expect(decodeReplies([encodeRespReply(ok)])).toEqual([ok]);
    expect(() => decodeReplies([encodeRespReply(nested(9, bulk('x')))])).toThrow('Protocol error: arrays nested too deeply');
  });

  it('honours a custom maxDepth, however the bytes are split', () => {
    const ok = nested(3, int(1));
    expect(decodeReplies([encodeRespReply(ok)], new ReplyDecoder({ maxDepth: 3 }))).toEqual([ok]);
    const tooDeep = encodeRespReply(nested(4, int(1)));
    for (const feeding of allFeedings(tooDeep)) {
      expect(() => decodeReplies(feeding.chunks, new ReplyDecoder({ maxDepth: 3 })), feeding.name).toThrow('Protocol error: arrays nested too deeply');
    }
  });

  it('empty and nil arrays do not count as nesting', () => {
    const r = nested(2, array([array([]), array(null)]));
    expect(decodeReplies([encodeRespReply(r)], new ReplyDecoder({ maxDepth: 3 }))).toEqual([r]);
  });
});

describe('ReplyDecoder protocol errors', () => {
  const cases: { name: string; wire: string; message: string }[] = [
    { name: 'unknown type byte', wire: '?what\r\n', message: 'Protocol error: unexpected reply type byte 63' },
    { name: 'empty line', wire: '\r\n', message: 'Protocol error: unexpected reply type byte 13' },
    { name: 'bad integer', wire: ':12a\r\n', message: 'Protocol error: invalid integer' },
    { name: 'bulk length below -1', wire: '$-2\r\n', message: 'Protocol error: invalid bulk length' },
    { name: 'bulk length not a number', wire: '$x\r\n', message: 'Protocol error: invalid bulk length' },
    { name: 'bulk not terminated by CRLF', wire: '$3\r\nabcXY', message: 'Protocol error: bulk string not terminated by CRLF' },
    { name: 'array length below -1', wire: '*-5\r\n', message: 'Protocol error: invalid multibulk length' },
  ];
  for (const c of cases) {
    it(`${c.name}, however split`, () => {
      for (const feeding of allFeedings(Buffer.from(c.wire, 'latin1'))) {
        expect(() => decodeReplies(feeding.chunks), feeding.name).toThrow(c.message);
      }
    });
  }

  it('bulk and array sizes are bounded by the limits', () => {
    const limits = { maxLineBytes: 32, maxBulkBytes: 10, maxArgs: 4 };
    expect(() => decodeReplies([Buffer.from('$11\r\n')], new ReplyDecoder({ limits }))).toThrow('Protocol error: bulk too large');
    expect(() => decodeReplies([Buffer.from('*5\r\n')], new ReplyDecoder({ limits }))).toThrow('Protocol error: array too large');
    expect(decodeReplies([Buffer.from('$10\r\n0123456789\r\n*4\r\n:1\r\n:2\r\n:3\r\n:4\r\n')], new ReplyDecoder({ limits }))).toEqual([
      bulk('0123456789'),
      array([int(1), int(2), int(3), int(4)]),
    ]);
  });

  it('a reply line that never ends is an error once past the line limit', () => {
    const decoder = new ReplyDecoder({ limits: { maxLineBytes: 32, maxBulkBytes: 10, maxArgs: 4 } });
    decoder.push(Buffer.from('+' + 'x'.repeat(20)));
    expect(decoder.next()).toBeUndefined();
    decoder.push(Buffer.from('x'.repeat(20)));
    expect(() => decoder.next()).toThrow('Protocol error: reply line too long');
  });
});

describe('encodeRespRequest -> RequestDecoder round trip', () => {
  function decodeRequests(chunks: readonly Buffer[]): Buffer[][] {
    const decoder = new RequestDecoder();
    const out: Buffer[][] = [];
    for (const chunk of chunks) {
      decoder.push(chunk);
      for (let s = decoder.next(); s !== Decode.NeedMore; s = decoder.next()) {
        expect(s).toBe(Decode.Request);
        expect(decoder.resp).toBe(true);
        out.push(decoder.args.map((a) => Buffer.from(a)));
      }
    }
    return out;
  }

  const requests: (Buffer | string)[][] = [
    ['PING'],
    ['SET', 'key', 'hello world'],
    ['SET', Buffer.from('k\r\n'), BINARY],
    ['SET', 'héllo', '日本'],
    ['SET', '', Buffer.alloc(0)],
    ['MSET', 'a', '1', 'b', '2', 'c', '3'],
  ];

  it('encodes strings as UTF-8 and buffers as they are', () => {
    expect(encodeRespRequest(['SET', 'é', Buffer.from([0xff])]).toString('latin1')).toBe('*3\r\n$3\r\nSET\r\n$2\r\nÃ©\r\n$1\r\n\xff\r\n');
    const sink = new ByteSink(2);
    writeRespRequest(sink, ['GET', 'a']);
    expect(sink.take().toString()).toBe('*2\r\n$3\r\nGET\r\n$1\r\na\r\n');
  });

  for (const args of requests) {
    it(`round-trips ${JSON.stringify(args.map((a) => (typeof a === 'string' ? a : a.toString('latin1'))))}`, () => {
      const expected = [args.map((a) => (typeof a === 'string' ? Buffer.from(a, 'utf8') : a))];
      for (const feeding of allFeedings(encodeRespRequest(args))) {
        expect(decodeRequests(feeding.chunks), feeding.name).toEqual(expected);
      }
    });
  }

  it('round-trips all of them pipelined, however split', () => {
    const wire = Buffer.concat(requests.map((r) => encodeRespRequest(r)));
    const expected = requests.map((args) => args.map((a) => (typeof a === 'string' ? Buffer.from(a, 'utf8') : a)));
    for (const feeding of allFeedings(wire)) {
      expect(decodeRequests(feeding.chunks), feeding.name).toEqual(expected);
    }
  });
});

describe('bulkLength / writeBulk (encoders that size their output first)', () => {
  it('writes what writeRespReply writes for a bulk string, in exactly bulkLength bytes, at any offset', () => {
    // Every length where the digit count changes, and binary content.
    for (const n of [0, 1, 9, 10, 11, 99, 100, 101, 999, 1000, 65_535, 65_536, 1_000_000]) {
      const data = Buffer.alloc(n);
      for (let i = 0; i < n; i++) data[i] = (i * 31 + 7) & 0xff;
      const expected = encodeRespReply(bulk(data));
      expect(bulkLength(n), `length ${n}`).toBe(expected.length);
      const out = Buffer.alloc(3 + expected.length + 3, 0xee);
      const end = writeBulk(out, 3, data);
      expect(end, `length ${n}`).toBe(3 + expected.length);
      expect(out.subarray(3, end).equals(expected), `length ${n}`).toBe(true);
      expect([...out.subarray(0, 3), ...out.subarray(end)], 'nothing written outside its room').toEqual([0xee, 0xee, 0xee, 0xee, 0xee, 0xee]);
    }
  });
});
