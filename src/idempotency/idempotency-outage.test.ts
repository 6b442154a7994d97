import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { customerDoc, tenantDoc } from '../../test/helpers/event-fixtures.js';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';

/**
 * Issue 15: a write retried with the same Idempotency-Key applies exactly once across a database
 * outage around its commit. The commit is held at a precise point by a deferred trigger that waits
 * on an advisory lock the test holds (it fires inside COMMIT, once the answer is written); the test
 * then cuts that connection (pg_terminate_backend), or lets the commit through after the client has
 * gone, and retries with the same key.
 */
const LOCK = 815_015;
let s: TestServer;
let holder: pg.Client;

beforeAll(async () => {
  s = await startTestServer();
  // Fires when the answer is saved (status_code set), at commit time.
  await s.t.owner.query(`
    create function test_hold_commit() returns trigger language plpgsql as $$
    begin perform pg_advisory_xact_lock(${LOCK}); return null; end $$;
    create constraint trigger test_hold_commit after insert or update on idempotency_keys
      deferrable initially deferred for each row when (new.status_code is not null)
      execute function test_hold_commit();`);
  holder = new pg.Client({ connectionString: s.t.ownerUrl });
  holder.on('error', () => undefined);
  await holder.connect();
});
afterAll(async () => {
  await holder?.end();
  await s?.close();
});

/** The backend waiting inside COMMIT for the test's lock. */
async function heldCommit(): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const r = await s.t.owner.query<{ pid: number }>(
      `select pid from pg_locks where locktype = 'advisory' and objid = $1 and not granted`,
      [LOCK],
    );
    if (r.rows[0]) return r.rows[0].pid;
    await new Promise((res) => setTimeout(res, 50));
  }
  throw new Error('no commit waited for the lock');
}

const create = (name: string, key: string, signal?: AbortSignal) =>
  fetch(`${s.url}/v1/customers`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${s.adminToken}`,
      'content-type': 'application/json',
      'idempotency-key': key,
    },
    body: JSON.stringify(customerDoc(name)),
    ...(signal ? { signal } : {}),
  }).then(async (res) => ({ status: res.status, headers: res.headers, body: await res.json() }));

/** How many customers, lineage versions, audit records and events exist for the slug. */
async function written(slug: string) {
  const r = await s.t.owner.query<{ objects: number; versions: number; audits: number; events: number }>(
    `select (select count(*)::int from customers where slug = $1) as objects,
            (select count(*)::int from object_versions where object_kind = 'Customer' and slug = $1) as versions,
            (select count(*)::int from audit_records where action = 'customer.create' and target_slug = $1) as audits,
            (select count(*)::int from outbox_events where type like '%customer.created%' and data->>'slug' = $1) as events`,
    [slug],
  );
  return r.rows[0];
}

describe('Idempotency-Key across a database outage at commit', () => {
  it('the connection cut inside the commit applies nothing; the retry applies once, then replays', async () => {
    await holder.query('select pg_advisory_lock($1)', [LOCK]);
    const first = create('idemcut', 'cut-1');
    const pid = await heldCommit();
    await s.t.owner.query('select pg_terminate_backend($1)', [pid]);
    const cut = await first;
    await holder.query('select pg_advisory_unlock($1)', [LOCK]);
    expect(cut.status, JSON.stringify(cut.body)).toBe(503);
    expect(cut.body.code).toBe('database.unavailable');
    expect(cut.headers.get('retry-after')).toBeTruthy();
    expect(await written('idemcut')).toEqual({ objects: 0, versions: 0, audits: 0, events: 0 });

    const retry = await create('idemcut', 'cut-1');
    expect(retry.status, JSON.stringify(retry.body)).toBe(201);
    expect(retry.headers.get('idempotency-replayed')).toBeNull();
    const again = await create('idemcut', 'cut-1');
    expect(again.status).toBe(201);
    expect(again.headers.get('idempotency-replayed')).toBe('true');
    expect(again.body.metadata.uuid).toBe(retry.body.metadata.uuid);
    expect(await written('idemcut')).toEqual({ objects: 1, versions: 1, audits: 1, events: 1 });
  });

  it('a commit whose answer never reached the client is replayed, not applied again', async () => {
    await holder.query('select pg_advisory_lock($1)', [LOCK]);
    const gone = new AbortController();
    const first = create('idemlost', 'lost-1', gone.signal);
    await heldCommit();
    gone.abort();
    await expect(first).rejects.toThrow();
    await holder.query('select pg_advisory_unlock($1)', [LOCK]);
    // The commit goes through after the client left.
    for (let i = 0; i < 100 && (await written('idemlost'))?.objects === 0; i++)
      await new Promise((res) => setTimeout(res, 50));

    const retry = await create('idemlost', 'lost-1');
    expect(retry.status, JSON.stringify(retry.body)).toBe(201);
    expect(retry.headers.get('idempotency-replayed')).toBe('true');
    expect(await written('idemlost')).toEqual({ objects: 1, versions: 1, audits: 1, events: 1 });
  });

  it('a concurrent duplicate waits for the first and applies nothing; its retry replays', async () => {
    await holder.query('select pg_advisory_lock($1)', [LOCK]);
    const first = create('idemdup', 'dup-1');
    await heldCommit();
    const second = create('idemdup', 'dup-1');
    // The second waits on the first's uncommitted record (its transaction, not a lock of the test).
    for (let i = 0; i < 100; i++) {
      const r = await s.t.owner.query(
        `select 1 from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'
           and query like '%insert into idempotency_keys%'`,
      );
      if (r.rowCount) break;
      await new Promise((res) => setTimeout(res, 50));
    }
    await holder.query('select pg_advisory_unlock($1)', [LOCK]);
    const [a, b] = await Promise.all([first, second]);
    expect(a.status, JSON.stringify(a.body)).toBe(201);
    expect(b.status, JSON.stringify(b.body)).toBe(409);
    expect(b.body.code).toBe('idempotency.in_progress');
    const retry = await create('idemdup', 'dup-1');
    expect(retry.status).toBe(201);
    expect(retry.headers.get('idempotency-replayed')).toBe('true');
    expect(retry.body.metadata.uuid).toBe(a.body.metadata.uuid);
    expect(await written('idemdup')).toEqual({ objects: 1, versions: 1, audits: 1, events: 1 });
  });
});

/** Other audited writes that take an Idempotency-Key: break-glass and limit overrides (issue 15). */
describe('Idempotency-Key on break-glass and limit overrides across a cut commit', () => {
  const post = (path: string, token: string, body: unknown, key: string) =>
    fetch(`${s.url}${path}`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${token}`,
        'content-type': 'application/json',
        'idempotency-key': key,
      },
      body: JSON.stringify(body),
    }).then(async (res) => ({ status: res.status, headers: res.headers, body: await res.json() }));

  async function cutThenRetry(
    send: () => Promise<{ status: number; headers: Headers; body: { id: string; code?: string } }>,
    count: () => Promise<{ rows: number; audits: number }>,
  ) {
    await holder.query('select pg_advisory_lock($1)', [LOCK]);
    const first = send();
    await s.t.owner.query('select pg_terminate_backend($1)', [await heldCommit()]);
    const cut = await first;
    await holder.query('select pg_advisory_unlock($1)', [LOCK]);
    expect(cut.status, JSON.stringify(cut.body)).toBe(503);
    expect(await count()).toEqual({ rows: 0, audits: 0 });
    const retry = await send();
    expect(retry.status, JSON.stringify(retry.body)).toBe(201);
    const again = await send();
    expect(again.headers.get('idempotency-replayed')).toBe('true');
    expect(again.body.id).toBe(retry.body.id);
    expect(await count()).toEqual({ rows: 1, audits: 1 });
  }

  it('a break-glass request applies once', async () => {
    const otto = await s.token({ subject: 'otto-idem', roles: ['platform-operator'], sessionId: null });
    await cutThenRetry(
      () =>
        post(
          '/v1/break-glass',
          otto,
          { reason: 'incident 9: idempotency across a cut', ttlSeconds: 600 },
          'bg-cut',
        ),
      async () =>
        (
          await s.t.owner.query<{ rows: number; audits: number }>(
            `select (select count(*)::int from break_glass_grants where principal = 'otto-idem') as rows,
                    (select count(*)::int from audit_records where action = 'breakglass.start'
                       and actor_principal = 'otto-idem') as audits`,
          )
        ).rows[0]!,
    );
  });

  it('a limit override applies once', async () => {
    const applied = await s.request('POST', '/v1/apply', {
      body: [customerDoc('idemlim'), tenantDoc('idemlim')],
    });
    expect(applied.status, JSON.stringify(applied.body)).toBe(200);
    await cutThenRetry(
      () =>
        post(
          '/v1/tenants/idemlim-eu-prod/limit-overrides',
          s.adminToken,
          { name: 'rate.read', value: 500, reason: 'incident 9' },
          'lim-cut',
        ),
      async () =>
        (
          await s.t.owner.query<{ rows: number; audits: number }>(
            `select (select count(*)::int from limit_overrides o join tenants t on t.id = o.tenant_id
                       where t.slug = 'idemlim-eu-prod') as rows,
                    (select count(*)::int from audit_records where action = 'limits.override'
                       and target_slug = 'idemlim-eu-prod') as audits`,
          )
        ).rows[0]!,
    );
  });
});
