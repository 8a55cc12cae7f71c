// The one xxHash32 wrapper every component uses. The ring, the proxy's router and the
// server's migration dumps must all agree on a key's hash, so nothing else imports xxhash.
// A server keeps each key's hash in its store, and its top bits pick the key's shard.
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
