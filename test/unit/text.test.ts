import { describe, expect, it } from 'vitest';
import { quote, writeTextReply, type TextStyle } from '../../src/common/protocol/text.js';
import { ByteSink } from '../../src/common/protocol/byte-sink.js';
import { array, bulk, error, int, NIL, OK, simple, type Reply } from '../../src/common/protocol/reply.js';

function render(reply: Reply, style: TextStyle): string {
  const sink = new ByteSink(4);
  writeTextReply(sink, reply, style);
  return sink.take().toString('latin1');
}

describe("writeTextReply 'value' (GET)", () => {
  it('writes the value raw after VALUE, spaces included', () => {
    expect(render(bulk('hello world'), 'value')).toBe('VALUE hello world\n');
    expect(render(bulk('tab\there "quotes" \\'), 'value')).toBe('VALUE tab\there "quotes" \\\n');
  });

  it('writes NOT_FOUND for a nil bulk', () => {
    expect(render(NIL, 'value')).toBe('NOT_FOUND\n');
  });

  it('an empty value is still a VALUE line', () => {
    expect(render(bulk(''), 'value')).toBe('VALUE \n');
  });

  it('quotes a value holding LF or CR, so the reply stays one line', () => {
    expect(render(bulk('a\nb'), 'value')).toBe('VALUE "a\\nb"\n');
    expect(render(bulk('a\r\nb'), 'value')).toBe('VALUE "a\\r\\nb"\n');
    expect(render(bulk(Buffer.from([0x0a, 0x00, 0x22, 0x5c, 0x7f, 0xe9])), 'value')).toBe('VALUE "\\n\\x00\\"\\\\\\x7f\xe9"\n');
  });

  it('passes bytes >= 0x80 through unchanged', () => {
    const sink = new ByteSink(4);
    writeTextReply(sink, bulk(Buffer.from('héllo', 'utf8')), 'value');
    expect(sink.take().equals(Buffer.concat([Buffer.from('VALUE '), Buffer.from('héllo', 'utf8'), Buffer.from('\n')]))).toBe(true);
  });

  it('falls back to the plain rendering for other reply types', () => {
    expect(render(OK, 'value')).toBe('OK\n');
  });
});

describe("writeTextReply 'deleted' (DEL)", () => {
  it('NOT_FOUND, DELETED, DELETED <n>', () => {
    expect(render(int(0), 'deleted')).toBe('NOT_FOUND\n');
    expect(render(int(1), 'deleted')).toBe('DELETED\n');
    expect(render(int(3), 'deleted')).toBe('DELETED 3\n');
  });
});

describe("writeTextReply 'values' (MGET)", () => {
  it('space-separated values, quoted where needed, (nil) for a missing key', () => {
    const reply = array([bulk('a'), NIL, bulk('hello world'), bulk(''), bulk('q"x'), bulk('back\\slash'), bulk('x\ny'), bulk('\x01')]);
    expect(render(reply, 'values')).toBe('a (nil) "hello world" "" "q\\"x" "back\\\\slash" "x\\ny" "\\x01"\n');
  });

  it('a nil array is (nil); an empty array is an empty line', () => {
    expect(render(array(null), 'values')).toBe('(nil)\n');
    expect(render(array([]), 'values')).toBe('\n');
  });
});

describe("writeTextReply 'lines' (INFO, HELP, NODES)", () => {
  it('writes the text lines with LF endings, then END', () => {
    expect(render(bulk('# Server\r\nversion:1\r\nkeys:2\r\n'), 'lines')).toBe('# Server\nversion:1\nkeys:2\nEND\n');
    expect(render(bulk('one\ntwo\n\n\n'), 'lines')).toBe('one\ntwo\nEND\n');
  });

  it('an empty text is just END', () => {
    expect(render(bulk(''), 'lines')).toBe('END\n');
    expect(render(bulk('\r\n'), 'lines')).toBe('END\n');
  });
});

describe("writeTextReply 'plain'", () => {
  it('renders each reply type as its text', () => {
    expect(render(OK, 'plain')).toBe('OK\n');
    expect(render(simple('QUEUED'), 'plain')).toBe('QUEUED\n');
    expect(render(int(42), 'plain')).toBe('42\n');
    expect(render(int(-1), 'plain')).toBe('-1\n');
    expect(render(NIL, 'plain')).toBe('(nil)\n');
    expect(render(bulk('hello world'), 'plain')).toBe('hello world\n');
    expect(render(array([int(1), bulk('b c'), OK]), 'plain')).toBe('1 "b c" OK\n');
  });

  it('a simple string with line breaks stays on one line', () => {
    expect(render(simple('a\r\nb'), 'plain')).toBe('a b\n');
  });
});

describe('errors in text replies', () => {
  const styles: TextStyle[] = ['value', 'deleted', 'values', 'lines', 'plain'];
  it('are one line, whatever the style', () => {
    for (const style of styles) {
      expect(render(error('ERR wrong number of arguments'), style), style).toBe('ERR wrong number of arguments\n');
      expect(render(error('ERR first\r\nsecond\nthird'), style), style).toBe('ERR first second third\n');
    }
  });
});

describe('quote', () => {
  it('escapes like redis-cli', () => {
    expect(quote(Buffer.from('plain'))).toBe('"plain"');
    expect(quote(Buffer.from('"\\\n\r\t'))).toBe('"\\"\\\\\\n\\r\\t"');
    expect(quote(Buffer.from([0x00, 0x1f, 0x7f, 0x80, 0xff]))).toBe('"\\x00\\x1f\\x7f\x80\xff"');
    expect(quote(Buffer.alloc(0))).toBe('""');
  });
});
