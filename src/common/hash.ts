// The one xxHash32 wrapper every component uses. The ring, the proxy's router and the
// server's migration dumps must all agree on a key's hash, so nothing else imports xxhash.
// (A server's choice of in-memory shard is private to it and uses a cheaper inline hash.)
//
// xxhash-wasm needs an async instantiation; top-level await makes every importer see a
// ready hasher, which keeps the hot path free of promises.
import xxhash from 'xxhash-wasm';

const hasher = await xxhash();

/** xxHash32 (seed 0) of raw bytes: keys are binary-safe, so we never hash a decoded string. */
export function hashBytes(bytes: Uint8Array): number {
  return hasher.h32Raw(bytes, 0) >>> 0;
}

/** xxHash32 (seed 0) of a string's UTF-8 bytes. Used for vnode labels like `host:port#i`. */
export function hashString(text: string): number {
  return hasher.h32(text, 0) >>> 0;
}

let scratch = Buffer.allocUnsafe(4096);

/**
 * Keys live in a server's store as latin1 strings (one char per byte), so this is the same
 * hash as hashBytes of the original key. A scratch buffer avoids an allocation per key when a
 * migration scans a whole store.
 */
export function hashLatin1(key: string): number {
  if (key.length > scratch.length) scratch = Buffer.allocUnsafe(key.length * 2);
  const n = scratch.write(key, 0, "latin1");
  return hasher.h32Raw(scratch.subarray(0, n), 0) >>> 0;
}
