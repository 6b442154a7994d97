import { lookup } from 'node:dns/promises';
import net from 'node:net';
import ipaddr from 'ipaddr.js';

/**
 * SSRF guard for webhook URLs. An address may be called only when it is global unicast: loopback,
 * private, carrier-grade NAT, link-local (the cloud metadata address 169.254.169.254 included),
 * unique-local, multicast, reserved and unspecified addresses are refused, and so is any IPv6 form
 * that carries an IPv4 address (IPv4-mapped, IPv4-compatible, SIIT, NAT64 64:ff9b::/96 and
 * 64:ff9b:1::/48, 6to4 2002::/16, Teredo) unless the IPv4 address inside is itself allowed. An
 * operator may allow networks explicitly (TENANTRY_WEBHOOK_ALLOWED_NETWORKS, CIDR list).
 * Classification by ipaddr.js (its range tables follow the IANA special-purpose registries), not by
 * hand-kept lists. Reasons never name the address (an error message must not tell what a name
 * resolved to).
 */
export const REFUSED_PRIVATE = 'refused (private address)';

type Addr = ipaddr.IPv4 | ipaddr.IPv6;

/** The IPv4 address an IPv6 address carries, when it is one of the forms that embed one. */
function embeddedIPv4(a: ipaddr.IPv6): ipaddr.IPv4 | undefined {
  const p = a.parts;
  const v4 = (hi: number, lo: number) => new ipaddr.IPv4([hi >> 8, hi & 0xff, lo >> 8, lo & 0xff]);
  const range = a.range();
  if (range === 'ipv4Mapped' || range === 'rfc6145' || range === 'rfc6052') return v4(p[6]!, p[7]!);
  if (range === '6to4') return v4(p[1]!, p[2]!);
  // IPv4-compatible ::a.b.c.d (deprecated; ::/96 except :: and ::1).
  if (p.slice(0, 6).every((x) => x === 0) && (p[6] !== 0 || p[7]! > 1)) return v4(p[6]!, p[7]!);
  return undefined;
}

/** An address the SSRF guard checked: the connection goes there, whatever the name resolves to now. */
export interface PinnedAddress {
  address: string;
  family: 4 | 6;
}

export class UrlGuard {
  private readonly allowed: [Addr, number][];

  constructor(allowedNetworks: readonly string[]) {
    this.allowed = allowedNetworks.map((cidr) =>
      cidr.includes('/')
        ? ipaddr.parseCIDR(cidr)
        : (() => {
            const a = ipaddr.parse(cidr);
            return [a, a.kind() === 'ipv4' ? 32 : 128] as [Addr, number];
          })(),
    );
  }

  private isAllowed(a: Addr): boolean {
    return this.allowed.some(([net, bits]) => a.kind() === net.kind() && a.match(net as never, bits));
  }

  /** Null when the address may be called, else why not (without the address). */
  checkAddress(address: string): string | null {
    const text = address.replace(/^\[|\]$/g, '');
    if (!ipaddr.isValid(text)) return 'refused (not an IP address)';
    const a = ipaddr.parse(text);
    if (this.isAllowed(a)) return null;
    if (a.kind() === 'ipv4') return a.range() === 'unicast' ? null : REFUSED_PRIVATE;
    const v6 = a as ipaddr.IPv6;
    const inner = embeddedIPv4(v6);
    if (inner) return this.isAllowed(inner) || inner.range() === 'unicast' ? null : REFUSED_PRIVATE;
    // Only global unicast; Teredo, NAT64 local-use (64:ff9b:1::/48) and every special range are refused.
    return v6.range() === 'unicast' && !v6.match(ipaddr.parseCIDR('64:ff9b:1::/48')) ? null : REFUSED_PRIVATE;
  }

  /**
   * Resolves the URL's host once; every address must be allowed. The address returned is the one to
   * connect to (pinned in the HTTP client's lookup), so a second resolution cannot differ.
   */
  async resolve(url: string): Promise<PinnedAddress | { refused: string }> {
    let host: string;
    try {
      host = new URL(url).hostname.replace(/^\[|\]$/g, '');
    } catch {
      return { refused: 'refused (not a URL)' };
    }
    const addresses: { address: string; family: number }[] = net.isIP(host)
      ? [{ address: host, family: net.isIP(host) }]
      : await lookup(host, { all: true, verbatim: true }).catch(() => []);
    if (addresses.length === 0) return { refused: 'refused (the host name does not resolve)' };
    for (const a of addresses) {
      const reason = this.checkAddress(a.address);
      if (reason) return { refused: reason };
    }
    const first = addresses[0]!;
    return { address: first.address, family: first.family === 6 ? 6 : 4 };
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
 * At apply time (no DNS): refuses a URL whose host is a forbidden IP literal or `localhost`;
 * hostnames are resolved and checked again before every attempt.
 */
export function literalAddressRefusal(url: string, allowedNetworks: readonly string[]): string | null {
  let host: string;
  try {
    host = new URL(url).hostname.replace(/^\[|\]$/g, '').toLowerCase();
  } catch {
    return 'refused (not a URL)';
  }
  const guard = new UrlGuard(allowedNetworks);
  if (host === 'localhost' || host.endsWith('.localhost')) return guard.checkAddress('127.0.0.1');
  return net.isIP(host) ? guard.checkAddress(host) : null;
}
