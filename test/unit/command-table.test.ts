import { describe, expect, it } from 'vitest';
import { allCommands, arityError, COMMANDS, hasFlag, keyPositions, lookupCommand, TEXT_REST } from '../../src/common/commands/table.js';
import { ArgCursor } from '../../src/common/commands/cursor.js';
import { CommandError } from '../../src/common/errors.js';

const args = (...a: string[]): Buffer[] => a.map((s) => Buffer.from(s));

describe('lookupCommand', () => {
  it('is case-insensitive and accepts a Buffer', () => {
    for (const name of ['get', 'GET', 'Get', 'gEt']) expect(lookupCommand(name)).toBe(COMMANDS.get);
    expect(lookupCommand(Buffer.from('SeT'))).toBe(COMMANDS.set);
  });

  it('unknown names give undefined', () => {
    expect(lookupCommand('nosuch')).toBeUndefined();
    expect(lookupCommand('')).toBeUndefined();
    expect(lookupCommand('toString')).toBeUndefined();
  });

  it('every command is found under its own name', () => {
    for (const spec of allCommands()) expect(lookupCommand(spec.name.toUpperCase())).toBe(spec);
  });
});

describe('arityError', () => {
  it('exact arity', () => {
    expect(arityError(COMMANDS.get, 2)).toBeUndefined();
    expect(arityError(COMMANDS.get, 1)).toBe("ERR wrong number of arguments for 'get' command");
    expect(arityError(COMMANDS.get, 3)).toBe("ERR wrong number of arguments for 'get' command");
    expect(arityError(COMMANDS.set, 3)).toBeUndefined();
    expect(arityError(COMMANDS.set, 4)).toBe("ERR wrong number of arguments for 'set' command");
  });

  it('minimum arity', () => {
    expect(arityError(COMMANDS.del, 1)).toBe("ERR wrong number of arguments for 'del' command");
    expect(arityError(COMMANDS.del, 2)).toBeUndefined();
    expect(arityError(COMMANDS.del, 50)).toBeUndefined();
    expect(arityError(COMMANDS.ping, 1)).toBeUndefined();
  });

  it('MSET needs key/value pairs', () => {
    expect(arityError(COMMANDS.mset, 2)).toBe("ERR wrong number of arguments for 'mset' command");
    expect(arityError(COMMANDS.mset, 3)).toBeUndefined();
    expect(arityError(COMMANDS.mset, 4)).toBe("ERR wrong number of arguments for 'mset' command");
    expect(arityError(COMMANDS.mset, 5)).toBeUndefined();
  });
});

describe('keyPositions', () => {
  it('GET: the one key', () => {
    expect(keyPositions(COMMANDS.get, 2)).toEqual([1]);
  });

  it('DEL: every argument after the name', () => {
    expect(keyPositions(COMMANDS.del, 2)).toEqual([1]);
    expect(keyPositions(COMMANDS.del, 4)).toEqual([1, 2, 3]);
  });

  it('MSET: every other argument', () => {
    expect(keyPositions(COMMANDS.mset, 3)).toEqual([1]);
    expect(keyPositions(COMMANDS.mset, 7)).toEqual([1, 3, 5]);
  });

  it('SET: only the key, not the value', () => {
    expect(keyPositions(COMMANDS.set, 3)).toEqual([1]);
  });

  it('keyless commands', () => {
    expect(keyPositions(COMMANDS.ping, 1)).toEqual([]);
    expect(keyPositions(COMMANDS.dbsize, 1)).toEqual([]);
  });
});

describe('the table', () => {
  it('TEXT_REST gives SET its value as the rest of the line', () => {
    expect(TEXT_REST.get('set')).toBe(2);
    expect(TEXT_REST.has('get')).toBe(false);
    expect(TEXT_REST.has('mset')).toBe(false);
  });

  it('routes and flags that the proxy and server rely on', () => {
    expect(COMMANDS.get.route).toBe('key');
    expect(COMMANDS.mget.route).toBe('keys');
    expect(COMMANDS.dbsize.route).toBe('all');
    expect(hasFlag(COMMANDS.set, 'write')).toBe(true);
    expect(hasFlag(COMMANDS.get, 'write')).toBe(false);
    expect(hasFlag(COMMANDS.add, 'admin')).toBe(true);
    expect(hasFlag(COMMANDS.rangepush, 'internal')).toBe(true);
    expect(COMMANDS.get.text).toBe('value');
    expect(COMMANDS.del.text).toBe('deleted');
  });

  it('every spec is self-consistent', () => {
    for (const spec of allCommands()) {
      expect(spec.name, spec.name).toBe(spec.name.toLowerCase());
      expect(spec.arity, spec.name).not.toBe(0);
      if (spec.route === 'key' || spec.route === 'keys') expect(spec.firstKey, spec.name).toBeGreaterThan(0);
      if (spec.textRest !== undefined) expect(spec.arity, spec.name).toBe(spec.textRest + 1);
    }
  });
});

describe('ArgCursor', () => {
  it('takes arguments in order and finish() accepts when none are left', () => {
    const cursor = new ArgCursor(args('droprange', 'tok', '100', 'x'), 'droprange');
    expect(cursor.remaining).toBe(3);
    expect(cursor.text()).toBe('tok');
    expect(cursor.uint()).toBe(100);
    expect(cursor.bytes().toString()).toBe('x');
    expect(cursor.optionalText()).toBeUndefined();
    expect(cursor.optionalBytes()).toBeUndefined();
    expect(() => cursor.finish()).not.toThrow();
  });

  it('finish() rejects extra arguments', () => {
    const cursor = new ArgCursor(args('select', '0', 'extra'), 'select');
    cursor.text();
    expect(() => cursor.finish()).toThrow(CommandError);
    expect(() => cursor.finish()).toThrow("ERR syntax error: unexpected argument for 'select'");
  });

  it('a missing argument is a wrong-arity CommandError', () => {
    const cursor = new ArgCursor(args('get'), 'get');
    let caught: unknown;
    try {
      cursor.bytes();
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(CommandError);
    expect((caught as CommandError).reply).toBe("ERR wrong number of arguments for 'get' command");
  });

  it('uint() accepts only non-negative integers up to max', () => {
    const bad = ['-1', '1.5', 'abc', '', '12345678901234567', ' 1'];
    for (const raw of bad) expect(() => new ArgCursor(args('x', raw), 'x').uint(), raw).toThrow('ERR value is not an integer or out of range');
    expect(new ArgCursor(args('x', '0'), 'x').uint()).toBe(0);
    expect(new ArgCursor(args('x', '10'), 'x').uint(10)).toBe(10);
    expect(() => new ArgCursor(args('x', '11'), 'x').uint(10)).toThrow(CommandError);
  });

  it('text() decodes UTF-8', () => {
    expect(new ArgCursor([Buffer.from('x'), Buffer.from('héllo', 'utf8')], 'x').text()).toBe('héllo');
  });
});
