// kv-client in each of its three modes, as the README's "kv-client modes and exit codes"
// section promises: one-shot (arguments), piped (stdin lines), and interactive (a real
// pseudo-terminal through util-linux `script`), including history across sessions and
// reconnecting after the proxy went away.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ask, BIN, cleanup, crash, freePort, lines, nodeAddress, requireTool, restart, runClient, startCluster, tempDir, type Cluster, type RunResult } from './harness.js';
import { cleanupOperator, parseInfo, PtySession } from './support-operator.js';

/** Exit codes from the README table (one-shot and piped modes). */
const EXIT = { ok: 0, errorReply: 1, unreachable: 2 } as const;
const PROXY_COMMANDS = ['PING', 'QUIT', 'AUTH', 'SET', 'GET', 'DEL', 'EXISTS', 'MGET', 'MSET', 'DBSIZE', 'INFO', 'HELP', 'ADD', 'REMOVE', 'NODES', 'MIGRATION'];

let cluster: Cluster;
let P: number;

beforeAll(async () => {
  cluster = await startCluster(2);
  P = cluster.proxy.port;
  for (const s of cluster.servers) expect(await ask(P, `ADD ${nodeAddress(s)}`)).toMatch(/^OK added /);
});

afterAll(async () => {
  await cleanupOperator();
  await cleanup();
});

function why(r: RunResult): string {
  return `exit ${r.code} (signal ${r.signal})\n--- stdout:\n${r.stdout}\n--- stderr:\n${r.stderr}`;
}

/** A port nothing listens on: free right now, and no test binds a port it did not ask the OS for. */
const deadPort = freePort;

describe('one-shot mode', () => {
  it('SET prints OK and exits 0; GET prints the value', async () => {
    const set = await runClient(['--port', String(P), 'SET', 'a', 'b']);
    expect(set.code, why(set)).toBe(EXIT.ok);
    expect(set.stdout).toBe('OK\n');
    expect(set.stderr).toBe('');
    const get = await runClient(['--port', String(P), 'GET', 'a']);
    expect(get.code, why(get)).toBe(EXIT.ok);
    expect(get.stdout).toBe('Value: b\n');
  });

  it('a quoted argument is one word: a value with spaces', async () => {
    const set = await runClient(['--port', String(P), 'SET', 'greeting', 'hello world']);
    expect(set.code, why(set)).toBe(EXIT.ok);
    const get = await runClient(['--port', String(P), 'GET', 'greeting']);
    expect(get.stdout, why(get)).toBe('Value: hello world\n');
  });

  it('GET of a missing key prints (not found) and exits 0: a missing key is not an error', async () => {
    const r = await runClient(['--port', String(P), 'GET', 'no-such-key']);
    expect(r.stdout, why(r)).toBe('(not found)\n');
    expect(r.code, why(r)).toBe(EXIT.ok);
  });

  it('an error reply prints (error) ERR ... and exits 1', async () => {
    const unknown = await runClient(['--port', String(P), 'FROBNICATE', 'x']);
    expect(unknown.code, why(unknown)).toBe(EXIT.errorReply);
    expect(unknown.stdout).toBe("(error) ERR unknown command 'FROBNICATE'\n");
    const arity = await runClient(['--port', String(P), 'GET']);
    expect(arity.code, why(arity)).toBe(EXIT.errorReply);
    expect(arity.stdout).toBe("(error) ERR wrong number of arguments for 'get' command\n");
  });

  it('an unreachable proxy exits 2 and says which address it could not reach', async () => {
    const port = await deadPort();
    const r = await runClient(['--port', String(port), 'GET', 'a']);
    expect(r.code, why(r)).toBe(EXIT.unreachable);
    expect(r.stdout + r.stderr).toMatch(new RegExp(`cannot connect to the proxy at 127\\.0\\.0\\.1:${port}: ECONNREFUSED`));
    expect(r.stderr, why(r)).not.toMatch(/^\s+at /m);
  });
});

describe('piped mode', () => {
  it('answers every line in order, one result each, and exits 1 if any line got an error', async () => {
    const r = await runClient(['--port', String(P)], { stdin: 'SET p 1\nGET p\nGET p-missing\n\nDEL p\nGET p\nPING\nFOO\nEXISTS p greeting\nSET sp hello  world \nGET sp\n' });
    expect(lines(r.stdout), why(r)).toEqual(['OK', 'Value: 1', '(not found)', 'Deleted', '(not found)', 'PONG', "(error) ERR unknown command 'FOO'", '(integer) 1', 'OK', 'Value: hello  world ']);
    expect(r.code, why(r)).toBe(EXIT.errorReply);
  });

  it('HELP, HELP SET, NODES as a table, RING with bars and a busiest-node line, INFO', async () => {
    const r = await runClient(['--port', String(P)], { stdin: 'HELP\nHELP SET\nNODES\nRING\nINFO\n' });
    expect(r.code, why(r)).toBe(EXIT.ok);
    const out = lines(r.stdout);
    let at = 0;

    // HELP: one line per command, `USAGE  summary`, up to HELP SET's first line.
    const helpSet = out.indexOf('SET <key> <value>');
    expect(helpSet, why(r)).toBeGreaterThan(0);
    const help = out.slice(at, helpSet);
    for (const line of help) expect(line).toMatch(/^[A-Z]+(?: \S+)* {2,}\S/);
    expect(help.map((l) => l.split(' ')[0]).sort()).toEqual(expect.arrayContaining([...PROXY_COMMANDS].sort()));
    at = helpSet;

    // HELP SET: usage, then the summary indented.
    expect(out[at++]).toBe('SET <key> <value>');
    expect(out[at++]).toMatch(/^ {2}Store a value\b/);

    // NODES: a header and one aligned row per member.
    expect(out[at++]).toMatch(/^NODE +HEALTH +KEYS +RING SHARE$/);
    const rows = out.slice(at, at + 2);
    at += 2;
    for (const row of rows) expect(row).toMatch(/^127\.0\.0\.1:\d+ +up +\d+ +\d+\.\d\d%$/);
    expect(rows.map((row) => row.split(/ +/)[0]).sort()).toEqual(cluster.servers.map(nodeAddress).sort());
    const shares = rows.map((row) => Number(/(\d+\.\d\d)%$/.exec(row)![1]));
    expect(shares.reduce((a, b) => a + b, 0)).toBeCloseTo(100, 0);

    // RING: a bar per member (the largest share gets the full 40), then the busiest-node line.
    const bars = out.slice(at, at + 2);
    at += 2;
    const barLengths = bars.map((bar) => {
      const m = /^127\.0\.0\.1:\d+ +(#+) *\d+\.\d\d% +keys=\d+$/.exec(bar);
      if (!m) throw new Error(`RING line is not 'address  ####  P%  keys=N': ${JSON.stringify(bar)}\n${why(r)}`);
      return m[1]!.length;
    });
    expect(Math.max(...barLengths)).toBe(40);
    expect(out[at++]).toMatch(/^busiest node: \d+\.\d{3}x the mean share$/);

    // INFO: the rest, the proxy's sections as Redis-style lines.
    const infoText = out.slice(at).join('\n');
    expect(out[at]).toBe('# Server');
    expect([...parseInfo(infoText).keys()]).toEqual(['Server', 'Clients', 'Memory', 'Persistence', 'Stats', 'Cluster', 'Migration', 'Keyspace']);
  });

  it('an unreachable proxy: every line reports it, exit 2', async () => {
    const port = await deadPort();
    const r = await runClient(['--port', String(port)], { stdin: 'GET a\nGET b\n' });
    expect(r.code, why(r)).toBe(EXIT.unreachable);
    expect(lines(r.stdout + r.stderr).filter((l) => l.includes(`cannot connect to the proxy at 127.0.0.1:${port}`)), why(r)).toHaveLength(2);
  });
});

// ---------------------------------------------------------------------------------------------
// Interactive mode, on a pseudo-terminal

function openTerminal(port: number, home: string): PtySession {
  const script = requireTool('script', 'apt-get install util-linux');
  const env: NodeJS.ProcessEnv = { ...process.env, HOME: home, TERM: 'xterm' };
  delete env['NO_COLOR'];
  return new PtySession(script, [process.execPath, BIN.client, '--port', String(port)], { cwd: home, env });
}

describe('interactive mode (on a TTY)', () => {
  it('shows the banner and prompt, answers like the README, and keeps history across sessions', async () => {
    const home = tempDir('home');
    const first = openTerminal(P, home);
    await first.waitFor(new RegExp(`^--- Thin KV Client \\(Connected to Proxy:${P}\\) ---\\n> $`));
    expect((await first.command('SET user1 Alice')).trim()).toBe('OK');
    expect((await first.command('GET user1')).trim()).toBe('Value: Alice');
    // Ctrl-D on an empty line leaves, and interactive mode always exits 0.
    first.type('\x04');
    expect(await first.waitForExit()).toEqual({ code: 0, signal: null });

    const historyFile = path.join(home, '.kv_client_history');
    expect(fs.existsSync(historyFile), `${historyFile} was not written`).toBe(true);
    expect(fs.readFileSync(historyFile, 'utf8').split('\n').filter(Boolean)).toEqual(['SET user1 Alice', 'GET user1']);

    // A new session recalls the last command with the up arrow.
    const second = openTerminal(P, home);
    await second.waitFor(/\n> $/);
    second.mark();
    second.type('\x1b[A');
    await second.waitFor(/GET user1$/);
    second.mark();
    second.type('\r');
    await second.waitFor(/\nValue: Alice\n\n> $/);
    // Up twice goes one further back.
    second.mark();
    second.type('\x1b[A\x1b[A');
    await second.waitFor(/SET user1 Alice$/);
    second.type('\x15'); // Ctrl-U: clear the line, run nothing
    second.type('exit\r');
    expect(await second.waitForExit()).toEqual({ code: 0, signal: null });
    // History keeps the commands run, in order, and not the line that was cleared.
    expect(fs.readFileSync(historyFile, 'utf8').split('\n').filter(Boolean)).toEqual(['SET user1 Alice', 'GET user1', 'exit']);
  });

  it('reports a killed proxy clearly, keeps the prompt, and reconnects once the proxy is back', async () => {
    const own = await startCluster(1);
    const port = own.proxy.port;
    expect(await ask(port, `ADD ${nodeAddress(own.servers[0]!)}`)).toMatch(/^OK added /);
    const term = openTerminal(port, tempDir('home'));
    await term.waitFor(/\n> $/);
    expect((await term.command('SET user1 Alice')).trim()).toBe('OK');

    // Tab completes a command name; NODES shows the table.
    term.mark();
    term.type('NOD\t');
    await term.waitFor(/NODES ?$/);
    const table = (await term.command('')).trim().split('\n');
    expect(table[0]).toMatch(/^NODE +HEALTH +KEYS +RING SHARE$/);
    expect(table[1]).toMatch(new RegExp(`^${nodeAddress(own.servers[0]!).replace(/\./g, '\\.')} +up +1 +100\\.00%$`));

    await crash(own.proxy);
    const down = (await term.command('GET user1')).trim();
    expect(down).toMatch(new RegExp(`^\\(error\\) (cannot connect to the proxy at 127\\.0\\.0\\.1:${port}: ECONNREFUSED|lost the connection to the proxy at 127\\.0\\.0\\.1:${port})$`));
    // Still there, still prompting: a second try says the same.
    expect((await term.command('GET user1')).trim()).toMatch(/^\(error\) cannot connect to the proxy/);

    const proxy = await restart(own.proxy);
    expect(proxy.port).toBe(port);
    expect((await term.command('GET user1')).trim()).toBe('Value: Alice');
    term.type('quit\r');
    expect(await term.waitForExit()).toEqual({ code: 0, signal: null });
  });
});
