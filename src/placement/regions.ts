import { sql } from 'kysely';
import type { Config } from '../config/config.js';
import type { Trx } from '../db/database.js';

/**
 * The regions tenants and cells may name: the live Region objects, or, while none has been declared,
 * the configured TENANTRY_REGIONS (the fallback that keeps installations without Region manifests working).
 */
export async function knownRegions(trx: Trx, config: Config): Promise<string[]> {
  const r = await sql<{
    slug: string;
  }>`select slug from regions where deleted_at is null order by slug`.execute(trx);
  return r.rows.length > 0 ? r.rows.map((x) => x.slug) : config.regions;
}
