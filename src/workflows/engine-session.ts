import { createHash } from 'node:crypto';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { guardPool } from '../db/connection-errors.js';
import { type Db, platformDb, poolOf } from '../db/database.js';
import type { Database } from '../db/schema.js';
import type { Statement } from './checkpoint-step.js';

export interface EngineSession {
  db: Db;
  /**
   * Runs one statement in autocommit, as a named prepared statement of its connection: the text of
   * a checkpoint is the same every step, so PostgreSQL parses and plans it once per connection.
   */
  prepared: Statement;
  destroy(): Promise<void>;
}

/**
 * The engine's own connections: the platform role's (the one `asPlatform` uses), each with the
 * platform scope set once for its session instead of once per transaction. The engine's bookkeeping
 * (claim, lease renewal, a step's checkpoint) is then one autocommit statement — one round trip and
 * one commit — where `asPlatform` takes four (BEGIN, the scope, the statement, COMMIT), which was
 * most of a step's overhead (bench/suites/workflows.ts).
 *
 * Why this is no wider than before: only the engine holds these connections and only for platform
 * work it did in the platform scope already; the scope is honoured for the platform role only
 * (migration 0013), and a tenant-role pool is never used here. Undefined when the Db was not made
 * by `createDb` (no pool to copy): the engine then runs everything through `asPlatform`.
 */
export function engineSession(db: Db, max: number): EngineSession | undefined {
  const base = poolOf(platformDb(db));
  if (!base) return undefined;
  // The scope is a startup parameter of every connection, so no statement sets it.
  const pool = guardPool(
    new pg.Pool({ ...base.options, max, allowExitOnIdle: true, options: '-c tenantry.platform=on' }),
  );
  const session = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  const names = new Map<string, string>();
  return {
    db: session,
    async prepared(query) {
      const c = query.compile(session);
      let name = names.get(c.sql);
      if (!name) {
        name = `tenantry_wf_${createHash('sha256').update(c.sql).digest('hex').slice(0, 24)}`;
        if (names.size < 1000) names.set(c.sql, name);
      }
      const r = await pool.query({ name, text: c.sql, values: c.parameters as unknown[] });
      return r.rows;
    },
    destroy: () => session.destroy(),
  };
}
