import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/test-database.js';
import { KIND_DEFINITIONS } from '../registry/kinds/index.js';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => t?.destroy());

/** The tables `Database` in schema.ts names, read from its source (the interface has no runtime form). */
function typedTables(): string[] {
  const text = fs.readFileSync(path.join(import.meta.dirname, 'schema.ts'), 'utf8');
  const body = /export interface Database \{([^}]*)\}/.exec(text)?.[1] ?? '';
  return [...body.matchAll(/^\s*([a-z_]+):/gm)].map((m) => m[1]!).sort();
}

describe('src/db/schema.ts', () => {
  it('lists every table the migrations create, and every kind table', async () => {
    const r = await t.owner.query<{ name: string }>(
      `select tablename as name from pg_tables where schemaname = 'public' and tablename not like 'tenantry_migration%'`,
    );
    const tables = typedTables();
    expect(tables).toEqual(r.rows.map((x) => x.name).sort());
    for (const d of KIND_DEFINITIONS) expect(tables).toContain(d.table);
  });
});
