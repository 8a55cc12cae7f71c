import { describe, expect, it } from 'vitest';
import { COLOR, PLAIN, formatReply } from '../../src/client/format.js';
import { completer, parseLine } from '../../src/client/repl.js';
import { array, bulk, error, int, NIL, OK, simple } from '../../src/common/protocol/reply.js';

describe('formatReply: the walkthrough lines', () => {
  it('GET shows the value', () => {
    expect(formatReply('get', ['name'], bulk('Alice'))).toEqual({ lines: ['Value: Alice'], failed: false });
    expect(formatReply('get', ['name'], bulk('Alice Smith')).lines).toEqual(['Value: Alice Smith']);
    expect(formatReply('get', ['name'], bulk(Buffer.from('héllo', 'utf8'))).lines).toEqual(['Value: héllo']);
  });

  it('GET of a missing key', () => {
    expect(formatReply('get', ['nope'], NIL)).toEqual({ lines: ['(not found)'], failed: false });
  });

  it('GET of a value with control bytes quotes it', () => {
    expect(formatReply('get', ['k'], bulk('a\nb\0')).lines).toEqual(['Value: "a\\nb\\x00"']);
  });

  it('ADD of a node into an empty cluster just joins it', () => {
    const reply = simple('OK added 127.0.0.1:8081 moved=0 scanned=0 ms=3');
    expect(formatReply('add', ['127.0.0.1:8081'], reply)).toEqual({ lines: ['[Proxy] Node Added: 127.0.0.1:8081'], failed: false });
  });

  it('ADD that had data to scan says it rebalanced', () => {
    const reply = simple('OK added 127.0.0.1:8083 moved=0 scanned=1 ms=3');
    expect(formatReply('add', ['127.0.0.1:8083'], reply)).toEqual({
      lines: ['[Proxy] Rebalancing for new node...', '[Proxy] Rebalancing Complete.'],
      failed: false,
    });
    expect(formatReply('add', ['127.0.0.1:8084'], simple('OK added 127.0.0.1:8084 moved=120 scanned=5000 ms=40')).lines).toEqual([
      '[Proxy] Rebalancing for new node...',
      '[Proxy] Rebalancing Complete.',
    ]);
  });

  it('ADD of an existing member', () => {
    expect(formatReply('add', ['127.0.0.1:8081'], simple('OK already a member')).lines).toEqual(['[Proxy] 127.0.0.1:8081 is already a member.']);
  });

  it('REMOVE evacuates, then removes', () => {
    expect(formatReply('remove', ['127.0.0.1:8082'], simple('OK removed 127.0.0.1:8082 moved=10 ms=5'))).toEqual({
      lines: ['[Proxy] Evacuating node...', '[Proxy] Node Removed.'],
      failed: false,
    });
  });

  it('an error reply fails the command', () => {
    expect(formatReply('get', ['k'], error('ERR no nodes in the ring'))).toEqual({ lines: ['(error) ERR no nodes in the ring'], failed: true });
    expect(formatReply('add', ['x'], error('ERR cannot reach x'))).toEqual({ lines: ['(error) ERR cannot reach x'], failed: true });
    expect(formatReply('get', ['k'], error('ERR boom'), COLOR)).toEqual({ lines: ['\x1b[31m(error) ERR boom\x1b[0m'], failed: true });
  });
});

describe('formatReply: other commands', () => {
  it('SET shows OK', () => {
    expect(formatReply('set', ['k', 'v'], OK)).toEqual({ lines: ['OK'], failed: false });
  });

  it('DEL', () => {
    expect(formatReply('del', ['a'], int(1)).lines).toEqual(['Deleted']);
    expect(formatReply('del', ['a', 'b'], int(2)).lines).toEqual(['Deleted: 2']);
    expect(formatReply('del', ['a'], int(0)).lines).toEqual(['(not found)']);
    expect(formatReply('del', ['a'], int(0), COLOR).lines).toEqual(['\x1b[2m(not found)\x1b[0m']);
  });

  it('INFO and HELP print their lines', () => {
    expect(formatReply('info', [], bulk('# Server\r\nversion:1\r\n')).lines).toEqual(['# Server', 'version:1']);
    expect(formatReply('help', [], bulk('GET <key>\n  Read a value.\n')).lines).toEqual(['GET <key>', '  Read a value.']);
  });

  it('redis-cli style for the rest', () => {
    expect(formatReply('dbsize', [], int(5), PLAIN).lines).toEqual(['(integer) 5']);
    expect(formatReply('exists', ['a'], int(0)).lines).toEqual(['(integer) 0']);
    expect(formatReply('mget', ['a', 'b', 'c'], array([bulk('1'), NIL, bulk('x y')])).lines).toEqual(['1) "1"', '2) (nil)', '3) "x y"']);
    expect(formatReply('mget', [], array([])).lines).toEqual(['(empty array)']);
    expect(formatReply('ping', [], simple('PONG')).lines).toEqual(['PONG']);
  });

  it('nested arrays line up like redis-cli', () => {
    // redis-cli:            1) 1) "get"
    //                          2) (integer) 2
    //                       2) "x"
    const reply = array([array([bulk('get'), int(2)]), bulk('x')]);
    expect(formatReply('command', [], reply).lines).toEqual(['1) 1) "get"', '   2) (integer) 2', '2) "x"']);
    const deeper = array([array([array([int(1), int(2)])])]);
    expect(formatReply('command', [], deeper).lines).toEqual(['1) 1) 1) (integer) 1', '      2) (integer) 2']);
  });
});

describe('parseLine', () => {
  const parse = (line: string): string[] => parseLine(line).map((b) => b.toString('utf8'));

  it('SET keeps the spaces in its value', () => {
    expect(parse('SET name Alice Smith')).toEqual(['SET', 'name', 'Alice Smith']);
    expect(parse('set greeting   hello   world  ')).toEqual(['set', 'greeting', 'hello   world  ']);
  });

  it('other commands split on blanks', () => {
    expect(parse('GET name')).toEqual(['GET', 'name']);
    expect(parse('  DEL a\tb  c ')).toEqual(['DEL', 'a', 'b', 'c']);
    expect(parse('MSET a 1 b 2')).toEqual(['MSET', 'a', '1', 'b', '2']);
  });

  it('blank input is no command', () => {
    expect(parse('')).toEqual([]);
    expect(parse('   \t')).toEqual([]);
  });

  it('keeps UTF-8 intact', () => {
    expect(parse('SET ключ значение с пробелами')).toEqual(['SET', 'ключ', 'значение с пробелами']);
  });
});

describe('completer', () => {
  it('completes command names, never internal ones', () => {
    expect(completer('GE')).toEqual([['GET'], 'GE']);
    const [all] = completer('');
    expect(all).toContain('SET');
    expect(all).not.toContain('RANGEDUMP');
    expect(completer('GET ke')).toEqual([[], 'GET ke']);
  });
});
