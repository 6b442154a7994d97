/** Manifests the suites apply: every suite works under one customer, `bench`. */
export const manifest = (kind: string, name: string | undefined, spec: Record<string, unknown>) => ({
  apiVersion: 'tenantry.dev/v1',
  kind,
  metadata: name ? { name } : {},
  spec,
});

export const BENCH_CUSTOMER = manifest('Customer', 'bench', { displayName: 'Bench', shortCode: 'bench' });

/** Tenant `bench-eu-<environmentType>-<qualifier>`. */
export const benchTenant = (
  qualifier: string,
  extra: Record<string, unknown> = {},
  environmentType = 'dev',
) => manifest('Tenant', undefined, { customer: 'bench', region: 'eu', environmentType, qualifier, ...extra });
