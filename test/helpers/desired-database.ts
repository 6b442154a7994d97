import { randomUUID } from 'node:crypto';
import type { DesiredResource } from '../../src/providers/provider.js';

/**
 * A database resource of scope `scopeSlug` (its own tenant) as the controller hands it to the
 * provider, named as Tenantry names it: `t_<scope>` (pool), `tenantry_<scope>` (silo),
 * `shared/<scope>` (shared).
 */
export function desiredDatabase(isolation: 'shared' | 'pool' | 'silo', scopeSlug: string): DesiredResource {
  const base = scopeSlug.replace(/-/g, '_');
  return {
    id: randomUUID(),
    type: 'database',
    tenantId: randomUUID(),
    tenantSlug: scopeSlug,
    scopeSlug,
    physicalName:
      isolation === 'silo' ? `tenantry_${base}` : isolation === 'pool' ? `t_${base}` : `shared/${scopeSlug}`,
    database: { isolation },
  };
}
