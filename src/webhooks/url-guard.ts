import { lookup } from 'node:dns/promises';
import net from 'node:net';

/**
 * SSRF guard for webhook URLs: loopback, private, carrier-grade NAT, link-local (which includes the
 * cloud metadata address 169.254.169.254), unique-local and unspecified addresses are refused unless
 * an operator allows a network explicitly (TENANTRY_WEBHOOK_ALLOWED_NETWORKS, CIDR list). Uses
 * node:net BlockList (no dependency needed).
 */
const BLOCKED: [string, number, 'ipv4' | 'ipv6'][] = [
  ['0.0.0.0', 8, 'ipv4'],
  ['10.0.0.0', 8, 'ipv4'],
  ['100.64.0.0', 10, 'ipv4'],
  ['127.0.0.0', 8, 'ipv4'],
  ['169.254.0.0', 16, 'ipv4'],
  ['172.16.0.0', 12, 'ipv4'],
  ['192.0.0.0', 24, 'ipv4'],
  ['192.168.0.0', 16, 'ipv4'],
  ['198.18.0.0', 15, 'ipv4'],
  ['224.0.0.0', 3, 'ipv4'],
  ['::', 128, 'ipv6'],
  ['::1', 128, 'ipv6'],
  ['fc00::', 7, 'ipv6'],
  ['fe80::', 10, 'ipv6'],
  ['ff00::', 8, 'ipv6'],
];

export class UrlGuard {
  private readonly blocked = new net.BlockList();
  private readonly allowed = new net.BlockList();

  constructor(allowedNetworks: readonly string[]) {
    for (const [addr, prefix, type] of BLOCKED) this.blocked.addSubnet(addr, prefix, type);
    for (const cidr of allowedNetworks) {
      const [addr, prefix] = cidr.split('/');
      const type = net.isIPv6(addr ?? '') ? 'ipv6' : 'ipv4';
      this.allowed.addSubnet(addr!, Number(prefix ?? (type === 'ipv6' ? 128 : 32)), type);
    }
  }

  /** Null when the address may be called, else why not. */
  checkAddress(address: string): string | null {
    let addr = address.replace(/^\[|\]$/g, '');
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(addr);
    if (mapped) addr = mapped[1]!;
    const type = net.isIPv6(addr) ? 'ipv6' : 'ipv4';
    if (this.allowed.check(addr, type)) return null;
    return this.blocked.check(addr, type) ? `${addr} is a private, loopback or link-local address` : null;
  }

  /** Resolves the URL's host; every address it resolves to must be allowed. */
  async check(url: string): Promise<string | null> {
    let host: string;
    try {
      host = new URL(url).hostname.replace(/^\[|\]$/g, '');
    } catch {
      return 'not a URL';
    }
    if (net.isIP(host)) return this.checkAddress(host);
    try {
      const addresses = await lookup(host, { all: true });
      for (const a of addresses) {
        const reason = this.checkAddress(a.address);
        if (reason) return `${host} resolves to ${reason}`;
      }
      return null;
    } catch (err) {
      return `cannot resolve ${host}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`;
    }
  }
}

export function validNetwork(cidr: string): boolean {
  const [addr, prefix, ...rest] = cidr.split('/');
  if (rest.length > 0 || !addr || !net.isIP(addr)) return false;
  if (prefix === undefined) return true;
  const n = Number(prefix);
  return Number.isInteger(n) && n >= 0 && n <= (net.isIPv6(addr) ? 128 : 32);
}

/**
 * At apply time (no DNS): refuses a URL whose host is a forbidden IP literal or `localhost`, with the
 * reason; hostnames are checked again, resolved, before every attempt.
 */
export function literalAddressRefusal(url: string, allowedNetworks: readonly string[]): string | null {
  let host: string;
  try {
    host = new URL(url).hostname.replace(/^\[|\]$/g, '').toLowerCase();
  } catch {
    return 'not a URL';
  }
  const guard = new UrlGuard(allowedNetworks);
  if (host === 'localhost' || host.endsWith('.localhost'))
    return guard.checkAddress('127.0.0.1') && 'localhost is loopback';
  return net.isIP(host) ? guard.checkAddress(host) : null;
}
