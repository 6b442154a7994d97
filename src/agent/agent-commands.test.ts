import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../test/helpers/test-server.js';
import { asPlatform } from '../db/database.js';
import { clearSealedOf, completeCommand, pullCommands, runOnAgent } from './agent-commands.js';

/**
 * A region migration's hand-over through an agent's commands (src/tenant-migrations/region-dataplane.ts
 * `SealTo`): the sealed credential is in a command row only until it is used, the receiving agent's
 * input once it reports, the handing agent's result once the control plane has read it, and what
 * a crash between the two left when the migration ends.
 */
describe('sealed credentials in agent commands', () => {
  let s: TestServer;
  let cellId: string;
  const run = randomBytes(3).toString('hex');
  const sealed = () =>
    `sealed:eyJ${randomBytes(30).toString('base64url')}.${randomBytes(20).toString('base64url')}`;
  const row = async (key: string) =>
    (
      await s.t.owner.query<{ input: unknown; result: unknown }>(
        'select input, result from cell_agent_commands where key = $1',
        [key],
      )
    ).rows[0]!;
  /** The agent's side: pulls its cell's commands and reports `output` for the one of `key`. */
  const agentDoes = async (key: string, output: unknown) => {
    for (;;) {
      const commands = await asPlatform(s.t.db, (trx) => pullCommands(trx, cellId));
      const mine = commands.find((c) => (c.input as { key?: string }).key === key);
      if (mine) {
        const done = await asPlatform(s.t.db, (trx) =>
          completeCommand(trx, cellId, mine.id, mine.attempts, { ok: true, output }),
        );
        expect(done).toBe(true);
        return mine.input;
      }
      await new Promise((res) => setTimeout(res, 20));
    }
  };

  beforeAll(async () => {
    s = await startTestServer();
    const cell = `sc${run}`;
    const applied = await s.request('POST', '/v1/apply', {
      body: [
        {
          apiVersion: 'tenantry.dev/v1',
          kind: 'Cell',
          metadata: { name: cell },
          spec: {
            region: 'eu',
            stage: 'nonprod',
            environmentTypes: ['dev'],
            tenancy: 'shared',
            capacity: { tenants: 5 },
          },
        },
      ],
    });
    expect(applied.status, JSON.stringify(applied.body)).toBe(200);
    cellId = (await s.t.owner.query('select id from cells where slug = $1', [cell])).rows[0].id;
  }, 60_000);
  afterAll(async () => {
    await s?.close();
  });

  it('clears a handed-over credential from the result once read, from the input once used, and at the end of its workflow', async () => {
    const wf = `wf-${run}`;
    // The source hands out a reader: its result holds it sealed until the control plane reads it.
    const reader = sealed();
    const asked = runOnAgent(s.t.db, {
      cellId,
      key: `${wf}:start-replication:source:openReader`,
      op: 'region.openReader',
      input: { key: `${wf}:open` } as never,
      waitMs: 10_000,
    });
    await agentDoes(`${wf}:open`, { connection: reader });
    expect(await asked).toEqual({ connection: reader });
    expect((await row(`${wf}:start-replication:source:openReader`)).result).toEqual({
      connection: 'sealed:cleared',
    });

    // The target gets it in its input: there until it reports.
    const subscribed = runOnAgent(s.t.db, {
      cellId,
      key: `${wf}:start-replication:target:subscribe`,
      op: 'region.subscribe',
      input: { key: `${wf}:subscribe`, connection: reader } as never,
      waitMs: 10_000,
    });
    expect(await agentDoes(`${wf}:subscribe`, { subscribed: 'x' })).toMatchObject({ connection: reader });
    await subscribed;
    expect((await row(`${wf}:start-replication:target:subscribe`)).input).toEqual({
      key: `${wf}:subscribe`,
      connection: 'sealed:cleared',
    });

    // A crash left one unread (the control plane died before reading): its workflow's end clears
    // it, another workflow's stays until its own end.
    const left = async (key: string) => {
      const asking = runOnAgent(s.t.db, {
        cellId,
        key,
        op: 'region.blobReader',
        input: { key } as never,
        waitMs: 0,
      });
      await expect(asking).rejects.toMatchObject({ reason: 'AgentPending' });
      await agentDoes(key, { reader: sealed() });
    };
    await left(`${wf}:copy-blobs:source:blobReader`);
    await left(`other-${run}:copy-blobs:source:blobReader`);
    expect(JSON.stringify((await row(`${wf}:copy-blobs:source:blobReader`)).result)).toContain('sealed:ey');
    await asPlatform(s.t.db, (trx) => clearSealedOf(trx, wf));
    expect((await row(`${wf}:copy-blobs:source:blobReader`)).result).toEqual({ reader: 'sealed:cleared' });
    expect(JSON.stringify((await row(`other-${run}:copy-blobs:source:blobReader`)).result)).toContain(
      'sealed:ey',
    );
  });
});
