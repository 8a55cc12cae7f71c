// How kv-client shows replies to people. The walkthrough lines (`Value: Alice`,
// `[Proxy] Node Added: ...`) are a public contract: keep them verbatim.
import type { Reply } from '../common/protocol/reply.js';
import { quote } from '../common/protocol/text.js';

export interface Formatted {
  lines: string[];
  /** The command failed (an error reply): one-shot mode exits non-zero. */
  failed: boolean;
}

export interface Style {
  error(text: string): string;
  dim(text: string): string;
}

export const PLAIN: Style = { error: (t) => t, dim: (t) => t };
export const COLOR: Style = { error: (t) => `\x1b[31m${t}\x1b[0m`, dim: (t) => `\x1b[2m${t}\x1b[0m` };

function text(value: Buffer): string {
  // Show printable values as they are; quote anything with control bytes, like redis-cli.
  return /[\x00-\x1f\x7f]/.test(value.toString('latin1')) ? quote(value) : value.toString('utf8');
}

function field(reply: Reply, name: string): string | undefined {
  if (reply.type !== 'simple') return undefined;
  return new RegExp(`(?:^| )${name}=(\\S+)`).exec(reply.value)?.[1];
}

export function formatReply(command: string, args: string[], reply: Reply, style: Style = PLAIN): Formatted {
  if (reply.type === 'error') return { lines: [style.error(`(error) ${reply.message}`)], failed: true };
  switch (command) {
    case 'get':
      if (reply.type === 'bulk') return ok(reply.value === null ? style.dim('(not found)') : `Value: ${text(reply.value)}`);
      break;
    case 'add': {
      if (reply.type !== 'simple') break;
      const node = args[0] ?? '';
      if (reply.value.startsWith('OK already a member')) return ok(`[Proxy] ${node} is already a member.`);
      // Data already in the cluster means this ADD rebalanced it; the very first nodes just join.
      const scanned = Number(field(reply, 'scanned') ?? 0);
      if (scanned > 0) return ok('[Proxy] Rebalancing for new node...', '[Proxy] Rebalancing Complete.');
      return ok(`[Proxy] Node Added: ${node}`);
    }
    case 'remove':
      if (reply.type === 'simple') return ok('[Proxy] Evacuating node...', '[Proxy] Node Removed.');
      break;
    case 'del':
      if (reply.type === 'int') return ok(reply.value === 0 ? style.dim('(not found)') : args.length > 1 ? `Deleted: ${reply.value}` : 'Deleted');
      break;
    case 'info':
    case 'nodes':
    case 'migration':
    case 'help':
      if (reply.type === 'bulk' && reply.value !== null) {
        return ok(...reply.value.toString('utf8').replace(/\r\n/g, '\n').replace(/\n+$/, '').split('\n'));
      }
      break;
  }
  return ok(...generic(reply, style));
}

function ok(...lines: string[]): Formatted {
  return { lines, failed: false };
}

/** redis-cli style for everything else. */
function generic(reply: Reply, style: Style, indent = ''): string[] {
  switch (reply.type) {
    case 'simple':
      return [reply.value];
    case 'error':
      return [style.error(`(error) ${reply.message}`)];
    case 'int':
      return [`(integer) ${reply.value}`];
    case 'bulk':
      return [reply.value === null ? style.dim('(nil)') : `"${text(reply.value).replace(/^"|"$/g, '')}"`];
    case 'array': {
      if (reply.items === null || reply.items.length === 0) return [style.dim('(empty array)')];
      const width = String(reply.items.length).length;
      const out: string[] = [];
      reply.items.forEach((item, i) => {
        const label = `${String(i + 1).padStart(width)}) `;
        const inner = generic(item, style, indent + ' '.repeat(label.length));
        out.push(indent + label + inner[0], ...inner.slice(1));
      });
      return out;
    }
  }
}
