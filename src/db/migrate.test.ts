import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { describe, expect, inject, it } from 'vitest';
import { migrate } from './database.js';

describe('migrations', () => {
  it('are safe when several processes start at once', async () => {
    const serverUrl = inject('serverUrl');
    const name = `mig_${randomBytes(5).toString('hex')}`;
    const admin = new pg.Client({ connectionString: serverUrl });
    await admin.connect();
    await admin.query(`create database ${name}`);
    const url = new URL(serverUrl);
    url.pathname = `/${name}`;
    try {
      const results = await Promise.all([
        migrate(url.toString()),
        migrate(url.toString()),
        migrate(url.toString()),
      ]);
      // Exactly one of them applied each migration; the others found nothing to do.
      expect(results.flat().sort()).toEqual(results.find((r) => r.length > 0)?.sort());
      const again = await migrate(url.toString());
      expect(again).toEqual([]);
      const c = new pg.Client({ connectionString: url.toString() });
      await c.connect();
      const r = await c.query('select count(*)::int as n from tenantry_migrations');
      expect(r.rows[0].n).toBe(results.flat().length);
      await c.end();
    } finally {
      await admin.query(`drop database ${name} with (force)`);
      await admin.end();
    }
  });
});
