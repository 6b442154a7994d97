import type { RequestContext } from '../../src/context/request-context.js';
import type { RegistryService } from '../../src/registry/registry.service.js';

export const customerDoc = (name: string) => ({
  apiVersion: 'tenantry.dev/v1',
  kind: 'Customer',
  metadata: { name },
  spec: { displayName: name, shortCode: name },
});

export const tenantDoc = (customer: string, region = 'eu', environmentType = 'prod', qualifier?: string) => ({
  apiVersion: 'tenantry.dev/v1',
  kind: 'Tenant',
  metadata: {},
  spec: { customer, region, environmentType, ...(qualifier ? { qualifier } : {}) },
});

/** Creates a customer and its tenants; returns the tenants' UUIDs and slugs in order. */
export async function seedTenants(
  registry: RegistryService,
  ctx: RequestContext,
  customer: string,
  qualifiers: string[],
): Promise<{ uuid: string; slug: string }[]> {
  const out = await registry.apply(ctx, [
    customerDoc(customer),
    ...qualifiers.map((q) => tenantDoc(customer, 'eu', 'prod', q)),
  ]);
  return out.filter((o) => o.kind === 'Tenant').map((o) => ({ uuid: o.uuid, slug: o.name }));
}
