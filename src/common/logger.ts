// pino for the binaries: JSON when stdout is not a TTY (for log shippers), pretty on a
// terminal. Disabled levels are no-ops, so nothing on the request path pays for logging.
//
// A binary's banner is its first line of output (scripts wait for it), but pino writes
// asynchronously, so a line logged while the process starts (the WAL replay, the ring it
// loaded) could land before it. Such lines are held until the binary calls release() right
// after printing the banner, or on its way out if it fails to start.
import pino, { type Logger } from 'pino';

export type { Logger };

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

interface Sink {
  write(line: string): unknown;
  flush?(cb?: (err?: Error) => void): void;
}

/** Passes lines on once released; holds them before. */
class StartupGate implements Sink {
  private held: string[] | undefined = [];

  constructor(private readonly out: Sink) {}

  write(line: string): boolean {
    if (this.held !== undefined) this.held.push(line);
    else this.out.write(line);
    return true;
  }

  flush(cb?: (err?: Error) => void): void {
    if (this.out.flush !== undefined) this.out.flush(cb);
    else cb?.();
  }

  release(): void {
    const held = this.held ?? [];
    this.held = undefined;
    for (const line of held) this.out.write(line);
  }
}

export interface BinaryLogger {
  log: Logger;
  /** Let the lines logged so far (and all later ones) through: call after the banner. */
  release(): void;
}

export function createLogger(name: string, level = 'info', stream: NodeJS.WritableStream = process.stdout): BinaryLogger {
  const fd = (stream as { fd?: number }).fd ?? 1;
  const pretty = (stream as NodeJS.WriteStream).isTTY === true;
  const out: Sink = pretty
    ? pino.transport({ target: 'pino-pretty', options: { destination: fd, colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } })
    : pino.destination({ fd, sync: false });
  const gate = new StartupGate(out);
  return { log: pino({ name, level }, gate), release: () => gate.release() };
}

/** A logger that drops everything: for in-process use in tests. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
