import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Decode, RequestDecoder, type RequestDecoderOptions } from '../../src/common/protocol/request-decoder.js';
import { encodeRespReply, encodeRespRequest, ReplyDecoder } from '../../src/common/protocol/resp.js';
import { TEXT_REST } from '../../src/common/commands/table.js';
import type { Limits } from '../../src/common/limits.js';
import type { Reply } from '../../src/common/protocol/reply.js';
import { cutAt, inOneReadBuffer } from './chunking.js';

const SMALL: Limits = { maxLineBytes: 24, maxBulkBytes: 48, maxArgs: 6 };

/** Pieces that steer random input into the framing code paths instead of only the text path. */
const TOKENS = ['*', '$', ':', '+', '-', '\r\n', '\r', '\n', '\0', ' ', '\t', '-1', '0', '1', '2', '3', '17', '99999999999999999999', 'SET', 'get', 'a'];

const arbBytes = fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a));
const arbSoup = fc
  .array(fc.oneof(fc.constantFrom(...TOKENS).map((t) => Buffer.from(t, 'latin1')), fc.uint8Array({ maxLength: 6 }).map((a) => Buffer.from(a))), { maxLength: 80 })
  .map((parts) => Buffer.concat(parts));
const arbInput = fc.oneof(arbBytes, arbSoup);
const arbCuts = fc.array(fc.nat(), { maxLength: 12 });
const arbOptions = fc.constantFrom<RequestDecoderOptions>({ textRest: TEXT_REST }, { textRest: TEXT_REST, limits: SMALL });

type Event = [Decode, string];

/**
 * Feed chunks, pulling after each; returns what came out. Throws only if the decoder does.
 * Each chunk arrives in one reused read buffer, as ClientConnection's do: after own(), the
 * buffer is scribbled over. `pullLimit` stops pulling after that many results per read (a
 * client that must wait, with requests left undecoded); the rest is pulled after the last read.
 */
function runRequestDecoder(chunks: readonly Buffer[], options: RequestDecoderOptions, pullLimit = Infinity): Event[] {
  const decoder = new RequestDecoder(options);
  const events: Event[] = [];
  let fatal = false;
  const pull = (limit: number, guardBytes: number): void => {
    for (let guard = 0; guard < limit; guard++) {
      const status = decoder.next();
      if (![Decode.NeedMore, Decode.Request, Decode.Error, Decode.Fatal].includes(status)) throw new Error(`unknown status ${String(status)}`);
      if (status === Decode.NeedMore) break;
      if (fatal) throw new Error('decoder produced output after Fatal');
      if (guard > guardBytes + 1000) throw new Error('decoder does not make progress');
      if (status === Decode.Fatal) fatal = true;
      events.push([status, status === Decode.Request ? decoder.args.map((a) => a.toString('latin1')).join('\u0001') : decoder.error]);
    }
  };
  let total = 0;
  for (const read of inOneReadBuffer(chunks)) {
    decoder.push(read);
    total += read.length;
    pull(pullLimit, read.length);
    decoder.own();
  }
  pull(Infinity, total);
  return events;
}

describe('fuzz: RequestDecoder', () => {
  it('never throws on arbitrary bytes split at arbitrary points, and stays silent after Fatal', () => {
    fc.assert(
      fc.property(arbInput, arbCuts, arbOptions, (bytes, cuts, options) => {
        runRequestDecoder(cutAt(bytes, cuts), options);
      }),
      { numRuns: 4000 },
    );
  });

  it('decodes the same requests however the stream is split (default limits)', () => {
    fc.assert(
      fc.property(arbInput, arbCuts, (bytes, cuts) => {
        const options = { textRest: TEXT_REST };
        expect(runRequestDecoder(cutAt(bytes, cuts), options)).toEqual(runRequestDecoder([bytes], options));
      }),
      { numRuns: 3000 },
    );
  });

  it('decodes the same requests when some are left undecoded across reads of a reused buffer (default limits)', () => {
    // Default limits, as above: with small ones, an over-long line still arriving is refused as
    // too long while the same line whole is refused for its content, so the split matters.
    fc.assert(
      fc.property(arbInput, arbCuts, fc.integer({ min: 0, max: 3 }), (bytes, cuts, pullLimit) => {
        const options = { textRest: TEXT_REST };
        expect(runRequestDecoder(cutAt(bytes, cuts), options, pullLimit)).toEqual(runRequestDecoder([bytes], options));
      }),
      { numRuns: 3000 },
    );
  });

  it('valid RESP frames of arbitrary byte strings round-trip exactly under arbitrary splits', () => {
    const arbRequest = fc.array(fc.uint8Array({ maxLength: 40 }).map((a) => Buffer.from(a)), { minLength: 1, maxLength: 6 });
    fc.assert(
      fc.property(fc.array(arbRequest, { maxLength: 6 }), arbCuts, (requests, cuts) => {
        const wire = Buffer.concat(requests.map((r) => encodeRespRequest(r)));
        const decoder = new RequestDecoder({ textRest: TEXT_REST });
        const got: Buffer[][] = [];
        for (const chunk of cutAt(wire, cuts)) {
          decoder.push(chunk);
          for (let s = decoder.next(); s !== Decode.NeedMore; s = decoder.next()) {
            expect(s).toBe(Decode.Request);
            expect(decoder.resp).toBe(true);
            got.push(decoder.args.map((a) => Buffer.from(a)));
          }
        }
        expect(got).toEqual(requests);
        expect(decoder.buffered).toBe(0);
      }),
      { numRuns: 1500 },
    );
  });
});

describe('fuzz: ReplyDecoder', () => {
  it("throws nothing but an Error starting 'Protocol error' on arbitrary bytes split at arbitrary points", () => {
    fc.assert(
      fc.property(arbInput, arbCuts, fc.boolean(), (bytes, cuts, small) => {
        const decoder = new ReplyDecoder(small ? { limits: SMALL, maxDepth: 3 } : {});
        try {
          for (const chunk of cutAt(bytes, cuts)) {
            decoder.push(chunk);
            while (decoder.next() !== undefined);
          }
        } catch (err) {
          expect(err).toBeInstanceOf(Error);
          expect((err as Error).message.startsWith('Protocol error')).toBe(true);
        }
      }),
      { numRuns: 4000 },
    );
  });

  it('encoded replies round-trip exactly under arbitrary splits', () => {
    const line = fc.string({ maxLength: 20 }).map((s) => s.replace(/[\r\n]/g, '_'));
    const leaf = fc.oneof(
      line.map((value): Reply => ({ type: 'simple', value })),
      line.map((message): Reply => ({ type: 'error', message })),
      fc.integer({ min: -(2 ** 40), max: 2 ** 40 }).map((value): Reply => ({ type: 'int', value })),
      fc.option(fc.uint8Array({ maxLength: 30 }).map((a) => Buffer.from(a))).map((value): Reply => ({ type: 'bulk', value })),
    );
    const reply: fc.Arbitrary<Reply> = fc.letrec<{ reply: Reply }>((tie) => ({
      reply: fc.oneof(
        { depthSize: 'small', withCrossShrink: true },
        leaf,
        fc.option(fc.array(tie('reply'), { maxLength: 4 })).map((items): Reply => ({ type: 'array', items })),
      ),
    })).reply;
    fc.assert(
      fc.property(fc.array(reply, { minLength: 1, maxLength: 5 }), arbCuts, (replies, cuts) => {
        const wire = Buffer.concat(replies.map((r) => encodeRespReply(r)));
        const decoder = new ReplyDecoder({ maxDepth: 64 });
        const got: Reply[] = [];
        for (const chunk of cutAt(wire, cuts)) {
          decoder.push(chunk);
          for (let r = decoder.next(); r !== undefined; r = decoder.next()) got.push(r);
        }
        expect(got).toEqual(replies);
      }),
      { numRuns: 1500 },
    );
  });
});
