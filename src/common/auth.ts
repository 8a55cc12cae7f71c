// Password checks in constant time: hash both sides to a fixed length first, so neither the
// comparison nor an early length mismatch reveals how much of a guess was right.
import { createHash, timingSafeEqual } from 'node:crypto';

export class PasswordCheck {
  private readonly digest: Buffer;

  constructor(password: string) {
    this.digest = sha256(Buffer.from(password, 'utf8'));
  }

  matches(candidate: Buffer): boolean {
    return timingSafeEqual(this.digest, sha256(candidate));
  }
}

function sha256(data: Buffer): Buffer {
  return createHash('sha256').update(data).digest();
}
