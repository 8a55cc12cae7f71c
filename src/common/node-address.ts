// A storage node's address as the ring, the state file and RANGEPUSH spell it. Pure.

/** host:port with a port from 1 to 65535, and nothing else; the host lower-cased. */
export function parseNodeAddress(text: string): string | undefined {
  const m = /^([A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?):(\d{1,5})$/.exec(text);
  if (!m) return undefined;
  const port = Number(m[2]);
  if (port < 1 || port > 65535 || String(port) !== m[2]) return undefined;
  return `${m[1]!.toLowerCase()}:${port}`;
}
