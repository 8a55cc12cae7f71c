// The virtual-node consistent-hash ring. Pure: no I/O, no clocks, so it is easy to test and
// the proxy can build a candidate ring, diff it against the current one and persist the plan
// before anything moves.
//
// Each member `host:port` gets `vnodes` points at xxHash32(`host:port#i`). A key belongs to the
// first point clockwise from xxHash32(key) (wrapping at 2^32). A point owns the arc that ends at
// it: (previous point, point].
import { hashString } from './hash.js';

/** 1024 points per node keeps 5 nodes within ~1.07x of the mean (ring.test.ts checks ≤ 1.10). */
export const DEFAULT_VNODES = 1024;

/** Hashes h with start < h <= end, going clockwise (so start > end wraps through 0). start === end is the whole ring. */
export interface HashRange {
  start: number;
  end: number;
}

export interface MovedRange extends HashRange {
  from: string;
  to: string;
}

const HASH_SPACE = 2 ** 32;

export function inRange(hash: number, range: HashRange): boolean {
  const { start, end } = range;
  if (start === end) return true;
  return start < end ? hash > start && hash <= end : hash > start || hash <= end;
}

/** Length of a range in hash values. */
export function rangeSize(range: HashRange): number {
  if (range.start === range.end) return HASH_SPACE;
  return range.start < range.end ? range.end - range.start : HASH_SPACE - range.start + range.end;
}

export class HashRing {
  readonly members: readonly string[];
  private readonly points: Uint32Array;
  private readonly owners: Uint16Array;

  constructor(
    members: Iterable<string>,
    readonly vnodes: number = DEFAULT_VNODES,
  ) {
    if (!Number.isInteger(vnodes) || vnodes < 1 || vnodes > 65536) throw new RangeError(`vnodes must be 1..65536, got ${vnodes}`);
    this.members = [...new Set(members)].sort();
    if (this.members.length > 65535) throw new RangeError('too many ring members');
    const all: { hash: number; owner: number }[] = [];
    this.members.forEach((member, owner) => {
      for (let i = 0; i < vnodes; i++) all.push({ hash: hashString(`${member}#${i}`), owner });
    });
    // Ties (two labels hashing alike) go to the lower member name; the loser's point is dropped,
    // so every ring with the same members is identical.
    all.sort((a, b) => a.hash - b.hash || a.owner - b.owner);
    const points: number[] = [];
    const owners: number[] = [];
    for (const p of all) {
      if (points.length > 0 && points[points.length - 1] === p.hash) continue;
      points.push(p.hash);
      owners.push(p.owner);
    }
    this.points = Uint32Array.from(points);
    this.owners = Uint16Array.from(owners);
  }

  get size(): number {
    return this.members.length;
  }

  has(member: string): boolean {
    return this.members.includes(member);
  }

  with(member: string): HashRing {
    return new HashRing([...this.members, member], this.vnodes);
  }

  without(member: string): HashRing {
    return new HashRing(
      this.members.filter((m) => m !== member),
      this.vnodes,
    );
  }

  /** Index of the point that owns `hash`: the first point >= hash, wrapping to 0. */
  private pointFor(hash: number): number {
    const points = this.points;
    let lo = 0;
    let hi = points.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (points[mid]! < hash) lo = mid + 1;
      else hi = mid;
    }
    return lo === points.length ? 0 : lo;
  }

  /** Owner of a key hash; undefined when the ring is empty. */
  ownerOfHash(hash: number): string | undefined {
    if (this.points.length === 0) return undefined;
    return this.members[this.owners[this.pointFor(hash)]!];
  }

  /** Index into `members` of the owner of a hash, or -1 for an empty ring (hot path: no strings). */
  ownerIndexOfHash(hash: number): number {
    if (this.points.length === 0) return -1;
    return this.owners[this.pointFor(hash)]!;
  }

  /** Fraction of the hash space each member owns. */
  shares(): Map<string, number> {
    const out = new Map<string, number>(this.members.map((m) => [m, 0]));
    const n = this.points.length;
    for (let i = 0; i < n; i++) {
      const start = this.points[(i - 1 + n) % n]!;
      const size = n === 1 ? HASH_SPACE : rangeSize({ start, end: this.points[i]! });
      const owner = this.members[this.owners[i]!]!;
      out.set(owner, out.get(owner)! + size / HASH_SPACE);
    }
    return out;
  }

  /** The arcs owned by `member`, merged where adjacent. */
  rangesOf(member: string): HashRange[] {
    return HashRing.empty(this.vnodes).movedTo(this).filter((r) => r.to === member);
  }

  private static empty(vnodes: number): HashRing {
    return new HashRing([], vnodes);
  }

  /**
   * Every arc whose owner differs between this ring and `next`, with its old and new owner.
   * Arcs owned by nobody in this ring (it is empty) get from = ''. Adjacent arcs with the same
   * (from, to) are merged, so a plan stays small.
   */
  movedTo(next: HashRing): MovedRange[] {
    const union = Array.from(new Set([...this.points, ...next.points])).sort((a, b) => a - b);
    const out: MovedRange[] = [];
    const n = union.length;
    for (let i = 0; i < n; i++) {
      const end = union[i]!;
      const from = this.ownerOfHash(end) ?? '';
      const to = next.ownerOfHash(end) ?? '';
      if (from === to) continue;
      const start = union[(i - 1 + n) % n]!;
      const last = out[out.length - 1];
      if (last !== undefined && last.end === start && last.from === from && last.to === to) last.end = end;
      else out.push({ start, end, from, to });
    }
    // The first and last arcs may meet across zero.
    if (out.length > 1) {
      const first = out[0]!;
      const last = out[out.length - 1]!;
      if (last.end === first.start && last.from === first.from && last.to === first.to) {
        first.start = last.start;
        out.pop();
      }
    }
    return out;
  }
}
