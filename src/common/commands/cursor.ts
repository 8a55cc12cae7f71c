// A cursor over a command's arguments (mini-redis `parse.rs`): take what you expect, then
// finish(), which rejects anything left over.
import { CommandError } from '../errors.js';

export class ArgCursor {
  private i = 1; // args[0] is the command name

  constructor(
    private readonly args: readonly Buffer[],
    private readonly command: string,
  ) {}

  get remaining(): number {
    return this.args.length - this.i;
  }

  bytes(): Buffer {
    const arg = this.args[this.i];
    if (arg === undefined) throw new CommandError(`ERR wrong number of arguments for '${this.command}' command`);
    this.i++;
    return arg;
  }

  optionalBytes(): Buffer | undefined {
    return this.remaining > 0 ? this.bytes() : undefined;
  }

  text(): string {
    return this.bytes().toString('utf8');
  }

  optionalText(): string | undefined {
    return this.remaining > 0 ? this.text() : undefined;
  }

  /** A non-negative integer no larger than `max`. */
  uint(max = Number.MAX_SAFE_INTEGER): number {
    const raw = this.bytes().toString('latin1');
    if (!/^\d{1,16}$/.test(raw)) throw new CommandError('ERR value is not an integer or out of range');
    const n = Number(raw);
    if (n > max) throw new CommandError('ERR value is not an integer or out of range');
    return n;
  }

  finish(): void {
    if (this.remaining > 0) throw new CommandError(`ERR syntax error: unexpected argument for '${this.command}'`);
  }
}
