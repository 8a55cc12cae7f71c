// pino for all three binaries: JSON when stdout is not a TTY (for log shippers), pretty on a
// terminal. Disabled levels are no-ops, so nothing on the request path pays for logging.
import pino, { type Logger } from 'pino';

export type { Logger };

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

export function createLogger(name: string, level = 'info', stream: NodeJS.WritableStream = process.stdout): Logger {
  const pretty = (stream as NodeJS.WriteStream).isTTY === true;
  if (pretty) {
    return pino({
      name,
      level,
      transport: { target: 'pino-pretty', options: { destination: (stream as { fd?: number }).fd ?? 1, colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } },
    });
  }
  return pino({ name, level }, pino.destination({ fd: (stream as { fd?: number }).fd ?? 1, sync: false }));
}

/** A logger that drops everything: for in-process use in tests. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
