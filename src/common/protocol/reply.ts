// The reply model shared by servers, the proxy and the client. It mirrors RESP2's five
// types; the text protocol renders the same values differently (see text.ts).

export type Reply =
  | { readonly type: 'simple'; readonly value: string }
  | { readonly type: 'error'; readonly message: string }
  | { readonly type: 'int'; readonly value: number }
  | { readonly type: 'bulk'; readonly value: Buffer | null }
  | { readonly type: 'array'; readonly items: Reply[] | null };

export const OK: Reply = { type: 'simple', value: 'OK' };
export const PONG: Reply = { type: 'simple', value: 'PONG' };
export const NIL: Reply = { type: 'bulk', value: null };
export const ZERO: Reply = { type: 'int', value: 0 };
export const ONE: Reply = { type: 'int', value: 1 };

export function simple(value: string): Reply {
  return { type: 'simple', value };
}

/** `message` is the whole error line, including its code: `ERR ...`, `NOAUTH ...`. */
export function error(message: string): Reply {
  return { type: 'error', message };
}

export function int(value: number): Reply {
  return value === 0 ? ZERO : value === 1 ? ONE : { type: 'int', value };
}

export function bulk(value: Buffer | string | null): Reply {
  if (value === null) return NIL;
  return { type: 'bulk', value: typeof value === 'string' ? Buffer.from(value, 'latin1') : value };
}

export function array(items: Reply[] | null): Reply {
  return { type: 'array', items };
}

/** `reply` with copies of its bulk strings, for keeping it past the buffer they may be views of. */
export function ownedReply(reply: Reply): Reply {
  if (reply.type === 'bulk') return reply.value === null ? reply : bulk(Buffer.from(reply.value));
  if (reply.type === 'array' && reply.items !== null) return array(reply.items.map(ownedReply));
  return reply;
}

export function isError(reply: Reply): reply is { type: 'error'; message: string } {
  return reply.type === 'error';
}
