// Flag parsing shared by the three binaries: strict values, clear errors, non-zero exits.
import { InvalidArgumentError, type Command } from 'commander';
import { LOG_LEVELS } from '../common/logger.js';

export function parsePort(value: string, allowZero = false): number {
  if (!/^\d{1,5}$/.test(value)) throw new InvalidArgumentError(`'${value}' is not a port number (1-65535).`);
  const port = Number(value);
  if (port > 65535 || (port === 0 && !allowZero)) throw new InvalidArgumentError(`'${value}' is not a port number (1-65535).`);
  return port;
}

export function parsePositiveInt(max: number) {
  return parseWholeNumber(1, max);
}

export function parseNonNegativeInt(max: number) {
  return parseWholeNumber(0, max);
}

function parseWholeNumber(min: number, max: number) {
  return (value: string): number => {
    if (!/^\d{1,9}$/.test(value) || Number(value) < min || Number(value) > max) {
      throw new InvalidArgumentError(`'${value}' must be a whole number from ${min} to ${max}.`);
    }
    return Number(value);
  };
}

export function parseChoice<T extends string>(choices: readonly T[]) {
  return (value: string): T => {
    if (!(choices as readonly string[]).includes(value)) throw new InvalidArgumentError(`'${value}' must be one of: ${choices.join(', ')}.`);
    return value as T;
  };
}

export function parseLogLevel(value: string): string {
  return parseChoice(LOG_LEVELS)(value);
}

export function parseSeconds(value: string): number {
  if (!/^\d{1,7}$/.test(value)) throw new InvalidArgumentError(`'${value}' must be a whole number of seconds.`);
  return Number(value);
}

/** Byte sizes such as 65536, 64kb, 16mb. */
export function parseBytes(value: string): number {
  const m = /^(\d+)\s*(b|kb|k|mb|m|gb|g)?$/i.exec(value.trim());
  if (!m) throw new InvalidArgumentError(`'${value}' is not a size (e.g. 65536, 64kb, 16mb).`);
  const unit = (m[2] ?? 'b').toLowerCase()[0];
  const n = Number(m[1]) * (unit === 'k' ? 1024 : unit === 'm' ? 1024 ** 2 : unit === 'g' ? 1024 ** 3 : 1);
  if (n < 1 || n > 1024 ** 3) throw new InvalidArgumentError(`'${value}' is out of range (1 byte to 1gb).`);
  return n;
}

/** A size as parseBytes reads it, or 0 (meaning "off"). */
export function parseBytesOrZero(value: string): number {
  return /^0+\s*(b|kb|k|mb|m|gb|g)?$/i.test(value.trim()) ? 0 : parseBytes(value);
}

/** Exit non-zero with commander's own error style for unknown flags and bad values. */
export function strict(program: Command): Command {
  return program.showHelpAfterError('(run with --help for usage)').allowExcessArguments(false);
}

/**
 * Run `stop` once on SIGINT/SIGTERM; a second signal exits at once. Install it before printing
 * the banner: a script that waits for the banner and then sends SIGTERM must find it in place
 * (a signal in between would get Node's default action and kill the process).
 */
export function onShutdownSignal(stop: (signal: string) => Promise<void>): void {
  let stopping = false;
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      if (stopping) process.exit(130);
      stopping = true;
      stop(signal).then(
        () => process.exit(0),
        (err: unknown) => {
          console.error(err);
          process.exit(1);
        },
      );
    });
  }
}
