// Two error families (see STYLE.md, habit 8):
//  - ProtocolError: the byte stream cannot be framed any more; the connection is closed
//    after one final ERR.
//  - CommandError: one request was wrong; it becomes an `ERR ...` reply and the connection
//    stays usable.
// On the client side a ReplyError (the server said ERR) is kept apart from a
// TransportError (we could not talk to the server at all).

export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
}

export class CommandError extends Error {
  override readonly name = 'CommandError';
  /** The full reply text, e.g. `ERR wrong number of arguments for 'get'` or `NOAUTH ...`. */
  constructor(readonly reply: string) {
    super(reply);
  }
}

export class ReplyError extends Error {
  override readonly name = 'ReplyError';
}

export class TransportError extends Error {
  override readonly name = 'TransportError';
}
