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
    case 'nodes':
      if (reply.type === 'bulk' && reply.value !== null) return ok(...nodesTable(parseNodes(reply.value.toString('utf8'))));
      break;
    case 'ring':
      if (reply.type === 'bulk' && reply.value !== null) return ok(...ringBars(parseNodes(reply.value.toString('utf8'))));
      break;
    case 'info':
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
        // The first line of an item follows its label (and, for the first item, the parent's
        // label); the item's further lines carry their own, deeper indent.
        const inner = generic(item, style, indent + ' '.repeat(label.length));
        out.push((i === 0 ? '' : indent) + label + inner[0], ...inner.slice(1));
      });
      return out;
    }
  }
}

export interface NodeRow {
  address: string;
  health: string;
  keys: string;
  share: number;
  note: string;
}

/** Parse the proxy's NODES lines: `host:port health keys=N share=P% [(joining)|(leaving)]`. */
export function parseNodes(text: string): NodeRow[] {
  const rows: NodeRow[] = [];
  for (const line of text.split(/\r?\n/)) {
    const m = /^(\S+) (\S+) keys=(\S+) share=([\d.]+)%(.*)$/.exec(line.trim());
    if (m) rows.push({ address: m[1]!, health: m[2]!, keys: m[3]!, share: Number(m[4]), note: m[5]!.trim() });
  }
  return rows;
}

function nodesTable(rows: NodeRow[]): string[] {
  if (rows.length === 0) return ['(no nodes: ADD <host:port> first)'];
  const header = ['NODE', 'HEALTH', 'KEYS', 'RING SHARE'];
  const cells = rows.map((r) => [r.address + (r.note ? ` ${r.note}` : ''), r.health, r.keys, `${r.share.toFixed(2)}%`]);
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]): string => c.map((v, i) => (i >= 2 ? v.padStart(widths[i]!) : v.padEnd(widths[i]!))).join('  ');
  return [line(header), ...cells.map(line)];
}

/** Each node's share of the ring as a bar, so imbalance shows at a glance. */
export function ringBars(rows: NodeRow[], width = 40): string[] {
  if (rows.length === 0) return ['(no nodes: ADD <host:port> first)'];
  const max = Math.max(...rows.map((r) => r.share), 1e-9);
  const mean = rows.reduce((s, r) => s + r.share, 0) / rows.length;
  const name = Math.max(...rows.map((r) => r.address.length));
  const out = rows.map((r) => `${r.address.padEnd(name)}  ${'#'.repeat(Math.round((r.share / max) * width)).padEnd(width)}  ${r.share.toFixed(2).padStart(6)}%  keys=${r.keys}`);
  out.push(`busiest node: ${(max / mean).toFixed(3)}x the mean share`);
  return out;
}
