// ByteSink copies short strings and byte arrays by hand and longer ones natively: both paths,
// and the edge between them, must write exactly the same bytes.
import { describe, expect, it } from 'vitest';
import { ByteSink } from '../../src/common/protocol/byte-sink.js';

/** Every byte value, so latin1 characters 128-255 and binary 0x00/0xff are covered. */
const ALL_BYTES = Buffer.from(Array.from({ length: 256 }, (_, i) => i));

describe('ByteSink', () => {
  it('writes strings and byte arrays of every length around the short-copy edge exactly', () => {
    const sink = new ByteSink(8); // tiny, so most appends also grow it
    const expected: Buffer[] = [];
    for (let n = 0; n <= 40; n++) {
      const bytes = ALL_BYTES.subarray(200 - n, 200); // ends in latin1 characters above 127
      const text = bytes.toString('latin1');
      sink.latin1(text).bytes(bytes);
      expected.push(bytes, bytes);
    }
    sink.latin1('$100\r\n').bytes(ALL_BYTES).latin1(ALL_BYTES.toString('latin1'));
    expected.push(Buffer.from('$100\r\n'), ALL_BYTES, ALL_BYTES);
    const want = Buffer.concat(expected);
    expect(sink.length).toBe(want.length);
    expect(sink.take().equals(want)).toBe(true);
    expect(sink.length, 'take() resets the sink').toBe(0);
  });

  it('take() returns a copy: later writes do not change it', () => {
    const sink = new ByteSink(4);
    sink.latin1('abc').bytes(Buffer.from([1, 2, 3]));
    const first = sink.take();
    sink.latin1('xyz').bytes(Buffer.from([9, 9, 9]));
    expect([...first]).toEqual([97, 98, 99, 1, 2, 3]);
    expect(sink.take().toString('latin1')).toBe('xyz\t\t\t');
  });
});
