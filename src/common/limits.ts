// Every size that comes off the network has a bound. These are the defaults; servers and the
// proxy accept flags to change them (documented in docs/protocol.md).
export interface Limits {
  /** Longest text-protocol line, and longest RESP header line (`*N` / `$N`). */
  maxLineBytes: number;
  /** Largest single RESP bulk string (a key or a value). */
  maxBulkBytes: number;
  /** Most arguments in one RESP array. */
  maxArgs: number;
}

export const DEFAULT_LIMITS: Limits = {
  maxLineBytes: 64 * 1024,
  maxBulkBytes: 16 * 1024 * 1024,
  maxArgs: 1024 * 1024,
};

/** Most keys per batch of a RANGEPUSH: servers refuse more, the proxy never asks for more. */
export const MAX_DUMP_KEYS = 100_000;

/** A client that does not read its replies is disconnected once this many bytes wait for it. */
export const DEFAULT_MAX_OUTPUT = 64 * 1024 * 1024;
