import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebhookReceiver } from '../../test/helpers/webhook-receiver.js';
import { REFUSED_PRIVATE, UrlGuard } from './url-guard.js';
import { post } from './webhook-dispatcher.js';

const guard = new UrlGuard([]);

/** Every address form that reaches a private, loopback, link-local or metadata address. */
const REFUSED = [
  // issue 16: accepted as public before
  '::127.0.0.1',
  '::7f00:1',
  '64:ff9b::7f00:1',
  '64:ff9b::a9fe:a9fe',
  '2002:7f00:1::',
  '::ffff:0:127.0.0.1',
  // IPv4
  '127.0.0.1',
  '127.255.255.254',
  '10.0.0.1',
  '172.16.0.1',
  '172.31.255.255',
  '192.168.1.1',
  '169.254.169.254',
  '100.64.0.1',
  '0.0.0.0',
  '255.255.255.255',
  '224.0.0.1',
  '240.0.0.1',
  '192.0.0.8',
  '198.18.0.1',
  // IPv4-mapped / -compatible / SIIT / NAT64 / 6to4 forms of them
  '::ffff:127.0.0.1',
  '::ffff:7f00:1',
  '::ffff:169.254.169.254',
  '::ffff:10.0.0.1',
  '::10.0.0.1',
  '::ffff:0:a9fe:a9fe',
  '64:ff9b::10.0.0.1',
  '64:ff9b::192.168.0.1',
  '64:ff9b:1::a00:1',
  '2002:a9fe:a9fe::',
  '2002:c0a8:101::1',
  '2002:0a00:0001:1234::1',
  // IPv6
  '::',
  '::1',
  'fe80::1',
  'fc00::1',
  'fd12:3456::1',
  'ff02::1',
  '2001:db8::1',
  '2001::1', // Teredo
  '100::1', // discard-only
];

const ALLOWED = [
  '93.184.216.34',
  '8.8.8.8',
  '2606:4700:4700::1111',
  '::ffff:8.8.8.8',
  '64:ff9b::808:808',
  '2002:808:808::1',
];

describe('the SSRF guard (ipaddr.js)', () => {
  it(`refuses ${REFUSED.length} private address forms, without naming the address`, () => {
    for (const a of REFUSED) expect(guard.checkAddress(a), a).toBe(REFUSED_PRIVATE);
    for (const a of ALLOWED) expect(guard.checkAddress(a), a).toBeNull();
  });

  it('refuses them as URLs too, resolving nothing, and says only "refused (private address)"', async () => {
    for (const a of REFUSED) {
      const url = a.includes(':') ? `http://[${a}]/hook` : `http://${a}/hook`;
      expect(await guard.resolve(url), url).toEqual({ refused: REFUSED_PRIVATE });
    }
    expect(await guard.resolve('http://localhost:1/')).toEqual({ refused: REFUSED_PRIVATE });
    const unknown = await guard.resolve('http://no-such-host.invalid/');
    expect(unknown).toEqual({ refused: 'refused (the host name does not resolve)' });
  });

  it('lets an operator allow a network, also in its IPv4-mapped form', () => {
    const g = new UrlGuard(['127.0.0.0/8', 'fd00::/8']);
    expect(g.checkAddress('127.0.0.1')).toBeNull();
    expect(g.checkAddress('::ffff:127.0.0.1')).toBeNull();
    expect(g.checkAddress('fd00::5')).toBeNull();
    expect(g.checkAddress('10.0.0.1')).toBe(REFUSED_PRIVATE);
  });
});

describe('the address is pinned', () => {
  let rx: WebhookReceiver;
  beforeAll(async () => {
    rx = await new WebhookReceiver().start();
  });
  afterAll(async () => rx?.stop());

  it('connects to the checked address, whatever the name would resolve to now', async () => {
    // The name does not resolve at all: the request still reaches the pinned address, so no second
    // resolution happens between the check and the connection (DNS rebinding has no window).
    const port = new URL(rx.url).port;
    const r = await post(
      `http://rebinding.invalid:${port}/hook`,
      { headers: { 'content-type': 'application/json', 'webhook-id': 'pin-1' }, body: '{}' },
      2_000,
      { address: '127.0.0.1', family: 4 },
    );
    expect(r.statusCode).toBe(204);
    expect(rx.received.map((x) => x.headers.host)).toEqual([`rebinding.invalid:${port}`]);
  });

  it('follows no redirect and names no address in a connection error', async () => {
    rx.behaviour = () => ({ status: 302, headers: { location: 'http://169.254.169.254/latest/meta-data' } });
    const port = new URL(rx.url).port;
    const r = await post(`http://hooks.example:${port}/x`, { headers: {}, body: '{}' }, 2_000, {
      address: '127.0.0.1',
      family: 4,
    });
    expect(r.statusCode).toBe(302);
    expect(rx.received).toHaveLength(2);
    const closed = await post('http://hooks.example:1/x', { headers: {}, body: '{}' }, 2_000, {
      address: '127.0.0.1',
      family: 4,
    });
    expect(closed.statusCode).toBeNull();
    expect(closed.error).toBeTruthy();
    expect(closed.error).not.toContain('127.0.0.1');
  });
});
