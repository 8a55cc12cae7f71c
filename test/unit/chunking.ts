// Ways to cut one byte stream into pushes (STYLE habit 2: every decoder fixture is fed whole,
// byte by byte, and split in two at every offset). Not a test file: the decoder tests share it.

import { seededRandom } from '../support/seeded-random.js';

export { seededRandom };

export interface Feeding {
  name: string;
  chunks: Buffer[];
}

export function whole(bytes: Buffer): Feeding {
  return { name: 'whole', chunks: [bytes] };
}

export function byteByByte(bytes: Buffer): Feeding {
  const chunks: Buffer[] = [];
  for (let i = 0; i < bytes.length; i++) chunks.push(Buffer.from(bytes.subarray(i, i + 1)));
  return { name: 'byte by byte', chunks };
}

/** Two pieces, cut at `at`. Pieces are copies, so a decoder cannot lean on one shared buffer. */
export function splitAt(bytes: Buffer, at: number): Feeding {
  return { name: `split at ${at}`, chunks: [Buffer.from(bytes.subarray(0, at)), Buffer.from(bytes.subarray(at))] };
}

/** Whole, byte by byte, then every two-piece split (offsets 1 .. length-1). */
export function allFeedings(bytes: Buffer): Feeding[] {
  const out = [whole(bytes), byteByByte(bytes)];
  for (let at = 1; at < bytes.length; at++) out.push(splitAt(bytes, at));
  return out;
}

/** Cut `bytes` at the given offsets (taken modulo length+1, sorted, duplicates kept as empty chunks). */
export function cutAt(bytes: Buffer, offsets: readonly number[]): Buffer[] {
  const points = offsets.map((o) => o % (bytes.length + 1)).sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let from = 0;
  for (const p of points) {
    chunks.push(Buffer.from(bytes.subarray(from, p)));
    from = p;
  }
  chunks.push(Buffer.from(bytes.subarray(from)));
  return chunks;
}

/** Deterministic pseudo-random bytes (mulberry32), so a failure reproduces. */
export function seededBytes(seed: number, length: number): Buffer {
  const next = seededRandom(seed);
  const out = Buffer.alloc(length);
  for (let i = 0; i < length; i++) out[i] = Math.floor(next() * 256);
  return out;
}


/**
 * `chunks` as the listener's shared read buffer delivers them (src/common/net/client-listener.ts):
 * each one a view into the same buffer, which is scribbled over (0xee) before the next chunk is
 * copied in. A decoder still holding a view after its own() then reads the scribble.
 */
export function* inOneReadBuffer(chunks: readonly Buffer[]): Generator<Buffer> {
  const buffer = Buffer.alloc(Math.max(1, ...chunks.map((c) => c.length)));
  for (const chunk of chunks) {
    buffer.fill(0xee);
    chunk.copy(buffer);
    yield buffer.subarray(0, chunk.length);
  }
}
