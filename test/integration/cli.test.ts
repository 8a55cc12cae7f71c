// The four binaries as a new user meets them: --help documents every flag the source defines,
// --version prints package.json's version, bad input fails fast with a clear message on stderr
// (no stack trace, no half-started server), and --log-level controls what reaches stdout.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { BIN, ROOT, ask, cleanup, freePort, nodeAddress, run, serverBanner, startServer, tempDir, TextClient, PROXY_BANNER, type RunResult } from './harness.js';
import { cleanupOperator, DEMO_BIN, flagsDefinedIn, launchBin, PACKAGE_VERSION, type Launched } from './support-operator.js';

afterEach(async () => {
  await cleanupOperator();
  await cleanup();
});

const BINARIES = {
  'kv-server': BIN.server,
  'kv-proxy': BIN.proxy,
  'kv-client': BIN.client,
  'kv-demo': DEMO_BIN,
} as const;
type BinName = keyof typeof BINARIES;

/** Run a binary to completion; a run that would start a long-lived process is killed at 20 s. */
function runBin(name: BinName, args: readonly string[]): Promise<RunResult> {
  return run(process.execPath, [BINARIES[name], ...args], { cwd: tempDir('cli'), timeoutMs: 20_000 });
}

function describeRun(r: RunResult): string {
  return `exit ${r.code} (signal ${r.signal})\n--- stdout:\n${r.stdout}\n--- stderr:\n${r.stderr}`;
}

/** A clean refusal: non-zero exit, nothing on stdout, a one-screen `error: ...` on stderr. */
function expectRefused(r: RunResult, mentions: RegExp): void {
  const why = describeRun(r);
  expect(r.signal, `killed instead of exiting: it started instead of refusing\n${why}`).toBeNull();
  expect(r.code, why).not.toBe(0);
  expect(r.stdout, why).toBe('');
  expect(r.stderr, why).toMatch(/^error: /);
  expect(r.stderr, why).toMatch(mentions);
  expect(r.stderr, `a stack trace instead of a message\n${why}`).not.toMatch(/^\s+at /m);
  expect(r.stderr, why).toMatch(/--help/);
}

describe.each(Object.keys(BINARIES) as BinName[])('%s', (name) => {
  it('--help exits 0 and documents every flag defined in its source', async () => {
    const source = fs.readFileSync(path.join(ROOT, 'src', 'bin', `${name}.ts`), 'utf8');
    const flags = flagsDefinedIn(source);
    expect(flags.length, `no .option('--...') found in src/bin/${name}.ts`).toBeGreaterThan(0);
    const r = await runBin(name, ['--help']);
    expect(r.code, describeRun(r)).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^Usage: ${name} `));
    for (const flag of flags) expect(r.stdout, `--help does not mention ${flag}`).toMatch(new RegExp(`(^|[\\s,])${flag}(?![\\w-])`, 'm'));
    expect(r.stdout).toMatch(/--version/);
    expect(r.stderr).toBe('');
  });

  it("README's Configuration section lists every flag defined in its source", () => {
    const source = fs.readFileSync(path.join(ROOT, 'src', 'bin', `${name}.ts`), 'utf8');
    const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    // From `### kv-server` (or `### npm start (kv-demo)`) to the next heading.
    const heading = new RegExp(`^### (${name}|npm start \\(${name}\\))$`, 'm').exec(readme);
    expect(heading, `README has no '### ${name}' heading`).not.toBeNull();
    const rest = readme.slice(heading!.index + heading![0].length);
    const section = rest.slice(0, rest.search(/^#{2,3} /m) >= 0 ? rest.search(/^#{2,3} /m) : undefined);
    const missing = flagsDefinedIn(source).filter((flag) => !new RegExp(`[\`\\s]${flag}[\\s\`]`).test(section));
    expect(missing, `flags of ${name} that README's '${heading![0]}' does not document`).toEqual([]);
  });

  it('--version prints the package.json version and exits 0', async () => {
    const r = await runBin(name, ['--version']);
    expect(r.code, describeRun(r)).toBe(0);
    expect(r.stdout).toBe(`${PACKAGE_VERSION}\n`);
  });

  it('an unknown flag exits non-zero with a clear message on stderr', async () => {
    // kv-server needs its port first, or the missing port is the first complaint.
    const args = name === 'kv-server' ? [String(await freePort()), '--no-such-flag'] : ['--no-such-flag'];
    expectRefused(await runBin(name, args), /unknown option '--no-such-flag'/);
  });
});

describe('bad values exit non-zero with a clear message on stderr', () => {
  const cases: [BinName, (port: number) => string[], RegExp][] = [
    ['kv-server', () => ['abc'], /'abc' is not a port number/],
    ['kv-server', () => ['70000'], /'70000' is not a port number/],
    ['kv-server', () => ['0'], /'0' is not a port number/],
    ['kv-server', (p) => [String(p), '--shards', '3'], /--shards.*'3'.*power of two/],
    ['kv-server', (p) => [String(p), '--fsync', 'sometimes'], /'sometimes'.*always, everysec, no/],
    ['kv-server', (p) => [String(p), '--max-line', 'lots'], /'lots' is not a size/],
    ['kv-server', (p) => [String(p), '--log-level', 'loud'], /'loud'.*fatal, error, warn, info, debug, trace, silent/],
    ['kv-server', (p) => [String(p), 'extra'], /too many arguments|unexpected|extra/i],
    ['kv-proxy', () => ['--port', '-1'], /'-1' is not a port number/],
    ['kv-proxy', () => ['--port', '65536'], /'65536' is not a port number/],
    ['kv-proxy', () => ['--vnodes', '0'], /--vnodes.*'0'/],
    ['kv-proxy', () => ['--connect-timeout', '1s'], /--connect-timeout.*'1s'/],
    ['kv-proxy', () => ['--migrate-batch', '0'], /--migrate-batch.*'0'/],
    ['kv-client', () => ['--port', 'x'], /'x' is not a port number/],
    ['kv-demo', () => ['--proxy-port', 'x'], /'x' is not a port number/],
    // A typo in the demo's port list: the same clear message as for --proxy-port.
    ['kv-demo', () => ['--server-ports', '8081,80x2,8083'], /'80x2' is not a port number/],
  ];

  it.each(cases.map(([bin, args, re]) => [`${bin} ${args(8081).join(' ')}`, bin, args, re] as const))('%s', async (_label, bin, args, mentions) => {
    // A free port where the flags would otherwise start a real server.
    expectRefused(await runBin(bin, args(await freePort())), mentions);
  });

  it('kv-server without a port says the port is required', async () => {
    expectRefused(await runBin('kv-server', []), /missing required argument 'port'/);
  });
});

describe('a --dir that cannot be created: exit 1 at once, naming it', () => {
  // Under a regular file; and under /proc, where fs.mkdirSync's recursive mode loops forever on
  // Node 20 (kv-server used to spin there at full CPU, and kv-proxy at its first ADD).
  const blocked = (): string[] => {
    const file = path.join(tempDir('cli-dir'), 'a-file');
    fs.writeFileSync(file, '');
    return [path.join(file, 'data'), '/proc/kvstore-no-such-dir/data'];
  };
  const runs: [BinName, (port: number, dir: string) => string[]][] = [
    ['kv-server', (port, dir) => [String(port), '--dir', dir]],
    ['kv-proxy', (port, dir) => ['--port', String(port), '--dir', dir]],
    ['kv-demo', (port, dir) => ['--proxy-port', String(port), '--dir', dir]],
  ];
  it.each(runs)('%s', async (bin, args) => {
    for (const dir of blocked()) {
      const r = await runBin(bin, args(await freePort(), dir));
      const why = describeRun(r);
      expect(r.signal, `still running at 20 s instead of refusing\n${why}`).toBeNull();
      expect(r.code, why).toBe(1);
      expect(r.stderr, why).toContain(`${bin}: cannot create the directory ${dir}: `);
      expect(r.stderr, `a stack trace instead of a message\n${why}`).not.toMatch(/^\s+at /m);
      expect(r.stdout, why).not.toMatch(/running on port/i);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// --log-level

interface LogLine {
  level: number;
  msg: string;
  name: string;
  [field: string]: unknown;
}

/** Every stdout line except the banner must be one JSON log object with level and msg. */
function logLines(stdout: readonly string[], banner: (line: string) => boolean): LogLine[] {
  return stdout
    .filter((l) => !banner(l))
    .map((l) => {
      let parsed: unknown;
      try {
        parsed = JSON.parse(l);
      } catch {
        throw new Error(`stdout line is neither the banner nor a JSON log line: ${JSON.stringify(l)}`);
      }
      const o = parsed as LogLine;
      if (typeof o.level !== 'number' || typeof o.msg !== 'string') throw new Error(`log line without numeric level and string msg: ${l}`);
      return o;
    });
}

async function launchServer(port: number, args: readonly string[]): Promise<Launched> {
  const dir = tempDir('log');
  const p = launchBin(BIN.server, [String(port), '--dir', dir, ...args], { cwd: dir });
  await p.waitForLine(serverBanner(port), 30_000);
  return p;
}

async function launchProxy(args: readonly string[]): Promise<{ p: Launched; port: number }> {
  const dir = tempDir('log');
  const p = launchBin(BIN.proxy, ['--port', '0', '--dir', dir, ...args], { cwd: dir });
  const { line } = await p.waitForLine(PROXY_BANNER, 30_000);
  return { p, port: Number(PROXY_BANNER.exec(line)![1]) };
}

/** 100 requests on one connection, half writes, all answered. */
async function hundredRequests(port: number): Promise<void> {
  const c = await TextClient.connect(port);
  const replies = await c.pipeline(Array.from({ length: 100 }, (_, i) => (i % 2 === 0 ? `SET log-${i} v${i}` : `GET log-${i - 1}`)));
  c.close();
  expect(replies.filter((r) => r !== 'OK' && !r.startsWith('VALUE v')), 'failed requests').toEqual([]);
}

/** SIGTERM and wait for a clean exit: afterwards stdout is complete (the stream has closed). */
async function stop(p: Launched): Promise<void> {
  p.signal('SIGTERM');
  const status = await p.waitForExit();
  expect(status, p.tail()).toEqual({ code: 0, signal: null });
}

describe('--log-level', () => {
  it('silent: a server and a proxy print nothing but their banners', async () => {
    const port = await freePort();
    const server = await launchServer(port, ['--log-level', 'silent']);
    const { p: proxy, port: proxyPort } = await launchProxy(['--log-level', 'silent']);
    expect(await ask(proxyPort, `ADD 127.0.0.1:${port}`)).toMatch(/^OK added /);
    await hundredRequests(proxyPort);
    await stop(proxy);
    await stop(server);
    expect(server.stdout).toEqual([serverBanner(port)]);
    expect(proxy.stdout).toEqual([`--- KV Proxy/Gateway running on Port ${proxyPort} ---`]);
    expect(server.stderr.concat(proxy.stderr)).toEqual([]);
  });

  it('default (info), stdout not a TTY: the exact banner plus JSON log lines, and no line per request (server)', async () => {
    const port = await freePort();
    const server = await launchServer(port, []);
    const isBanner = (l: string): boolean => l === serverBanner(port);
    expect(server.stdout.filter(isBanner)).toHaveLength(1);
    // Startup logs the WAL replay at info.
    const { index } = await server.waitForLine(/"msg":"WAL replayed"/, 30_000);
    const replayed = logLines([server.stdout[index]!], isBanner)[0]!;
    expect(replayed).toMatchObject({ level: 30, name: 'kv-server', msg: 'WAL replayed' });
    logLines(server.stdout, isBanner); // every line so far is the banner or JSON

    const before = server.stdout.length;
    await hundredRequests(port);
    // Stopping is the barrier: once the process has exited, every line it wrote is in.
    await stop(server);
    const after = logLines(server.stdout.slice(before), isBanner);
    expect(after.filter((l) => !/^shutting down/.test(l.msg)), 'log lines written while serving 100 requests').toEqual([]);
    expect(server.stderr).toEqual([]);
  });

  it('default (info): the proxy logs membership changes as JSON, and no line per request', async () => {
    const node = await startServer({ dir: tempDir('node') });
    const { p: proxy, port } = await launchProxy([]);
    const isBanner = (l: string): boolean => l === `--- KV Proxy/Gateway running on Port ${port} ---`;
    expect(await ask(port, `ADD ${nodeAddress(node)}`)).toMatch(/^OK added /);
    // Logged before the ADD reply; wait until it is through the pipe, then count from there.
    const { index } = await proxy.waitForLine(/"msg":"membership change complete"/, 30_000);
    expect(logLines([proxy.stdout[index]!], isBanner)[0]).toMatchObject({ level: 30, name: 'kv-proxy', kind: 'add', node: nodeAddress(node) });
    logLines(proxy.stdout, isBanner);

    const before = proxy.stdout.length;
    await hundredRequests(port);
    await stop(proxy);
    const after = logLines(proxy.stdout.slice(before), isBanner);
    expect(after.filter((l) => !/^shutting down/.test(l.msg)), 'log lines written while serving 100 requests').toEqual([]);
    expect(proxy.stderr).toEqual([]);
  });

  it('a move logs no warning: the migration closing its own node connections is no lost connection', async () => {
    const first = await startServer({ dir: tempDir('node') });
    const second = await startServer({ dir: tempDir('node') });
    const { p: proxy, port } = await launchProxy([]);
    const isBanner = (l: string): boolean => l === `--- KV Proxy/Gateway running on Port ${port} ---`;
    expect(await ask(port, `ADD ${nodeAddress(first)}`)).toMatch(/^OK added /);
    for (let i = 0; i < 200; i++) expect(await ask(port, `SET move:${i} v${i}`)).toBe('OK');
    expect(await ask(port, `ADD ${nodeAddress(second)}`)).toMatch(/^OK added \S+ moved=[1-9]/);
    await stop(proxy);
    const warnings = logLines(proxy.stdout, isBanner).filter((l) => l.level >= 40 && !/^shutting down/.test(l.msg));
    expect(warnings, 'warnings or errors logged by an ADD that moved keys').toEqual([]);
  });

  it('the banner is the first line, before what startup logs (a server replaying its WAL, a proxy loading its ring)', async () => {
    // pino writes asynchronously, so without holding startup lines back they could land first.
    const port = await freePort();
    const dir = tempDir('first-line');
    const first = launchBin(BIN.server, [String(port), '--dir', dir], { cwd: dir });
    await first.waitForLine(serverBanner(port), 30_000);
    await hundredRequests(port);
    await stop(first);
    const again = launchBin(BIN.server, [String(port), '--dir', dir], { cwd: dir });
    await again.waitForLine(/"msg":"WAL replayed"/, 30_000);
    expect(again.stdout[0]).toBe(serverBanner(port));

    const proxyPort = await freePort();
    const proxyDir = tempDir('first-line-proxy');
    const proxyArgs = ['--port', String(proxyPort), '--dir', proxyDir];
    const proxy = launchBin(BIN.proxy, proxyArgs, { cwd: proxyDir });
    await proxy.waitForLine(PROXY_BANNER, 30_000);
    expect(await ask(proxyPort, `ADD 127.0.0.1:${port}`)).toMatch(/^OK added /);
    await stop(proxy);
    const restarted = launchBin(BIN.proxy, proxyArgs, { cwd: proxyDir });
    await restarted.waitForLine(/"msg":"ring loaded from state file"/, 30_000);
    expect(restarted.stdout[0]).toBe(`--- KV Proxy/Gateway running on Port ${proxyPort} ---`);
    await stop(restarted);
    await stop(again);
  });

  it('warn: startup info lines are gone, the banner stays', async () => {
    const port = await freePort();
    const server = await launchServer(port, ['--log-level', 'warn']);
    await hundredRequests(port);
    await stop(server);
    expect(server.stdout).toEqual([serverBanner(port)]);
  });
});
