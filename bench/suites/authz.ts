/**
 * 3. Authorization and token validation, in process (no database): one Cedar decision (uncached,
 * and memoised as `decide` serves repeated ones) against a bare JavaScript function doing the same
 * check, and the validation of one built-in-issuer token (ES256) with a warm key set, without and
 * with the verified-token cache the API uses.
 * Goal (issue 4): p99 of a decision < 100 µs.
 */
import { Authorizer } from '../../src/authz/authorizer.js';
import type { RequestContext } from '../../src/context/request-context.js';
import { BuiltinIssuer } from '../../src/identity/builtin-issuer.js';
import { TokenVerifier } from '../../src/identity/token-verifier.js';
import { type Measurement, type Row, row } from '../lib/results.js';
import { settings } from '../lib/settings.js';

/** Times `op` one call at a time for `seconds`; decisions per second and p50/p99 in milliseconds. */
async function timed(label: string, seconds: number, op: (i: number) => unknown): Promise<Measurement> {
  const warmUntil = performance.now() + Math.min(settings.warmupSeconds, 1) * 1000;
  for (let i = 0; performance.now() < warmUntil; i++) await op(i);
  const samples: number[] = [];
  const until = performance.now() + seconds * 1000;
  const start = performance.now();
  for (let i = 0; performance.now() < until; i++) {
    const t = process.hrtime.bigint();
    await op(i);
    samples.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  const elapsed = (performance.now() - start) / 1000;
  samples.sort((a, b) => a - b);
  const at = (q: number) =>
    Number((samples[Math.min(samples.length - 1, Math.floor(samples.length * q))] ?? 0).toFixed(4));
  const m = {
    label,
    value: samples.length / elapsed,
    unit: 'ops/s',
    latencyMs: { p50: at(0.5), p99: at(0.99) },
  };
  console.log(
    `  ${label}: ${m.value.toFixed(0)} ops/s, p50 ${m.latencyMs.p50 * 1000} µs, p99 ${m.latencyMs.p99 * 1000} µs`,
  );
  return m;
}

const ctx = (tenant: string): RequestContext => ({
  actor: { principal: 'alice', kind: 'user' },
  scope: { kind: 'tenant', tenantId: tenant },
  appId: 'bench',
  sessionId: null,
  requestId: 'r',
  correlationId: 'c',
  roles: ['tenant-admin'],
  issuer: 'urn:tenantry:bench',
  customerId: 'c1',
});

export async function authzBenchmark(): Promise<Row[]> {
  const authz = new Authorizer();
  for (const a of ['tenant.read', 'tenant.write', 'deployment.write']) authz.registerAction(a);
  authz.seal();
  const seconds = Math.max(2, Math.min(settings.seconds, 4));
  const tenants = Array.from({ length: 64 }, (_, i) => `t${i}`);
  const bare = (c: RequestContext, resourceTenant: string) =>
    c.scope.kind === 'tenant' &&
    (c.roles ?? []).includes('tenant-admin') &&
    resourceTenant === c.scope.tenantId;

  const baseline = await timed('bare function (same check in JS)', seconds, (i) => {
    const t = tenants[i % 64]!;
    return bare(ctx(t), t);
  });
  const uncached = await timed('Cedar decision (uncached)', seconds, (i) => {
    const t = tenants[i % 64]!;
    return authz.evaluate(ctx(t), 'deployment.write', { kind: 'Deployment', id: `d${i}`, tenantId: t });
  });
  const memoised = await timed('Cedar decision (memoised, 64 principals × 64 objects)', seconds, (i) => {
    const t = tenants[i % 64]!;
    return authz.decide(ctx(t), 'deployment.write', { kind: 'Deployment', id: `d${i % 64}`, tenantId: t });
  });

  const issuer = await BuiltinIssuer.ephemeral('urn:tenantry:bench', 'tenantry');
  const token = await issuer.mint({ subject: 'alice', roles: ['tenant-admin'], tenant: 't1' });
  const uncachedVerifier = new TokenVerifier([], 30, 30, issuer, 0);
  const verify = await timed('token validation (ES256, warm key set)', seconds, () =>
    uncachedVerifier.verify(token),
  );
  // As the API runs it: the signature is checked once per token, later requests hit the cache.
  const cachedVerifier = new TokenVerifier([], 30, 30, issuer, 60);
  const cached = await timed('token validation (verified-token cache)', seconds, () =>
    cachedVerifier.verify(token),
  );

  return [
    row('Cedar decision, uncached, vs bare function', uncached, baseline, { p99AtMostMs: 0.1 }),
    row('Cedar decision, memoised, vs bare function', memoised, baseline, { p99AtMostMs: 0.1 }),
    row('Token validation (ES256, warm JWKS) vs bare function', verify, baseline, null, 'report only'),
    row('Token validation (cached) vs uncached', cached, verify, null, 'report only'),
  ];
}
