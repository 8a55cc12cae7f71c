// Rendering replies for the line-based text protocol: one line per data command.
// How a reply reads depends on the command (GET says `VALUE x`, DEL says `DELETED`), so each
// command in the table names a TextStyle.
import type { Reply } from './reply.js';
import type { ByteSink } from './byte-sink.js';

export type TextStyle =
  /** GET: `VALUE <value>` or `NOT_FOUND`. */
  | 'value'
  /** DEL: `DELETED` (with a count when more than one key went) or `NOT_FOUND`. */
  | 'deleted'
  /** MGET: space-separated values, quoted where needed, `(nil)` for a missing key. */
  | 'values'
  /** INFO, NODES: the lines of a bulk text, then `END`. */
  | 'lines'
  /** Everything else: the reply's plain text. */
  | 'plain';

export function writeTextReply(out: ByteSink, reply: Reply, style: TextStyle): void {
  if (reply.type === 'error') {
    out.latin1(oneLine(reply.message)).latin1('\n');
    return;
  }
  switch (style) {
    case 'value':
      if (reply.type === 'bulk' && reply.value !== null) {
        out.latin1('VALUE ');
        writeLineSafe(out, reply.value);
        out.latin1('\n');
        return;
      }
      if (reply.type === 'bulk') {
        out.latin1('NOT_FOUND\n');
        return;
      }
      break;
    case 'deleted':
      if (reply.type === 'int') {
        out.latin1(reply.value === 0 ? 'NOT_FOUND\n' : reply.value === 1 ? 'DELETED\n' : `DELETED ${reply.value}\n`);
        return;
      }
      break;
    case 'lines':
      if (reply.type === 'bulk' && reply.value !== null) {
        const text = reply.value.toString('latin1').replace(/\r\n/g, '\n').replace(/\n+$/, '');
        if (text.length > 0) out.latin1(text).latin1('\n');
        out.latin1('END\n');
        return;
      }
      break;
    case 'values':
    case 'plain':
      break;
  }
  writePlain(out, reply);
  out.latin1('\n');
}

function writePlain(out: ByteSink, reply: Reply): void {
  switch (reply.type) {
    case 'simple':
      out.latin1(oneLine(reply.value));
      return;
    case 'error':
      out.latin1(oneLine(reply.message));
      return;
    case 'int':
      out.latin1(String(reply.value));
      return;
    case 'bulk':
      if (reply.value === null) out.latin1('(nil)');
      else writeLineSafe(out, reply.value);
      return;
    case 'array':
      if (reply.items === null) {
        out.latin1('(nil)');
        return;
      }
      reply.items.forEach((item, i) => {
        if (i > 0) out.latin1(' ');
        if (item.type === 'bulk' && item.value !== null) writeQuotedIfNeeded(out, item.value);
        else writePlain(out, item);
      });
      return;
  }
}

function oneLine(text: string): string {
  return /[\r\n]/.test(text) ? text.replace(/[\r\n]+/g, ' ') : text;
}

function hasControl(value: Uint8Array): boolean {
  for (let i = 0; i < value.length; i++) {
    const c = value[i]!;
    if (c === 0x0a || c === 0x0d) return true;
  }
  return false;
}

/**
 * A value goes out raw, so `SET a hello world` reads back as `VALUE hello world`. Only a value
 * that would break the one-line framing (it holds CR or LF) is sent quoted with C escapes,
 * the way redis-cli shows such strings. RESP is the binary-safe path.
 */
function writeLineSafe(out: ByteSink, value: Buffer): void {
  if (hasControl(value)) writeQuoted(out, value);
  else out.bytes(value);
}

function writeQuotedIfNeeded(out: ByteSink, value: Buffer): void {
  let needs = value.length === 0;
  for (let i = 0; i < value.length && !needs; i++) {
    const c = value[i]!;
    needs = c <= 0x20 || c === 0x22 || c === 0x5c || c === 0x7f;
  }
  if (needs) writeQuoted(out, value);
  else out.bytes(value);
}

export function quote(value: Uint8Array): string {
  let s = '"';
  for (let i = 0; i < value.length; i++) {
    const c = value[i]!;
    if (c === 0x22) s += '\\"';
    else if (c === 0x5c) s += '\\\\';
    else if (c === 0x0a) s += '\\n';
    else if (c === 0x0d) s += '\\r';
    else if (c === 0x09) s += '\\t';
    else if (c < 0x20 || c === 0x7f) s += `\\x${c.toString(16).padStart(2, '0')}`;
    else s += String.fromCharCode(c);
  }
  return s + '"';
}

function writeQuoted(out: ByteSink, value: Buffer): void {
  out.latin1(quote(value));
}
