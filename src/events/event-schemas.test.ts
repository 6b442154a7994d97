import { createHash, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { seedTenants } from '../../test/helpers/event-fixtures.js';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/test-database.js';
import { settleWorkflows } from '../../test/helpers/workflows.js';
import { createRegistry } from '../app.js';
import { systemContext } from '../context/request-context.js';
import { recordStatusEvent } from '../controller/status.js';
import { asPlatform } from '../db/database.js';
import { CLOUD_EVENT_TYPES } from '../registry/kinds/index.js';
import { publishedEventSchemas } from './event-schemas.js';
import { EventsService } from './events.service.js';
import published from './published-event-schemas.json' with { type: 'json' };

const DIR = path.resolve(import.meta.dirname, '../../docs/events');
const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

describe('published event schemas', () => {
  it('are generated from TypeBox and checked in (npm run events:schemas)', () => {
    for (const [file, text] of Object.entries(publishedEventSchemas())) {
      expect(fs.readFileSync(path.join(DIR, file), 'utf8'), file).toBe(text);
    }
  });

  it('never change once published: a breaking change is a new version', () => {
    const hashes = published as Record<string, string>;
    for (const file of fs.readdirSync(DIR).filter((f) => f.endsWith('.json'))) {
      const recorded = hashes[file];
      expect(recorded, `${file} is new: record its hash in published-event-schemas.json`).toBeDefined();
      expect(
        sha256(fs.readFileSync(path.join(DIR, file), 'utf8')),
        `${file} was changed after publication`,
      ).toBe(recorded);
    }
    // A published version is never withdrawn either.
    for (const file of Object.keys(hashes)) expect(fs.existsSync(path.join(DIR, file)), file).toBe(true);
    expect(Object.keys(hashes).sort()).toEqual(CLOUD_EVENT_TYPES.map((t) => `${t}.json`).sort());
  });
});

describe('emitted events match their published schema', () => {
  let t: TestDatabase;
  beforeAll(async () => {
    t = await createTestDatabase();
  });
  afterAll(async () => t?.destroy());

  it('validates every event of a tenant lifecycle and a webhook endpoint', async () => {
    const ctx = systemContext('test-operator');
    const registry = createRegistry(t.db, t.config);
    const [tenant] = await seedTenants(registry, ctx, 'schemas', ['s']);
    // Each lifecycle action starts a workflow; the next one is refused until it ends.
    await registry.transition(ctx, tenant!.slug, 'suspend');
    await settleWorkflows(t);
    await registry.transition(ctx, tenant!.slug, 'resume');
    await settleWorkflows(t);
    await registry.apply(ctx, [
      {
        apiVersion: 'tenantry.dev/v1',
        kind: 'WebhookEndpoint',
        metadata: { name: 'hook', tenant: tenant!.slug },
        spec: { url: 'https://hooks.example.com/tenantry', eventTypes: ['dev.tenantry.tenant.suspended.v1'] },
      },
    ]);
    await registry.transition(ctx, tenant!.slug, 'archive');
    // What the controller reports: observed-state events through the same outbox.
    for (const [kind, phase] of [
      ['Deployment', 'Ready'],
      ['IntegrationResource', 'Failed'],
    ] as const) {
      await asPlatform(t.db, (trx) =>
        recordStatusEvent(
          trx,
          { ...ctx, correlationId: 'c1' },
          { kind, id: randomUUID(), slug: 'x', tenantId: tenant!.uuid, generation: 1 },
          phase === 'Ready' ? 'ready' : 'failed',
          {
            previousPhase: 'Pending',
            phase,
            reason: phase === 'Ready' ? 'Reconciled' : 'ProviderError',
            message: 'done',
          },
        ),
      );
    }
    const ajv = new Ajv2020({ strict: false, allErrors: true });
    addFormats.default(ajv);
    const validators = new Map(
      Object.entries(publishedEventSchemas()).map(([file, text]) => [
        file.replace(/\.json$/, ''),
        ajv.compile(JSON.parse(text)),
      ]),
    );
    const page = await new EventsService(t.db, t.config).read(ctx, { stream: null }, undefined, 500);
    expect(page.entries.length).toBeGreaterThanOrEqual(8);
    const types = page.entries.map((e) => e.event.type);
    expect(types).toContain('dev.tenantry.deployment.ready.v1');
    expect(types).toContain('dev.tenantry.integrationresource.failed.v1');
    for (const { event } of page.entries) {
      const validate = validators.get(event.type)!;
      expect(validate(event), `${event.type}: ${JSON.stringify(validate.errors)}`).toBe(true);
      expect(JSON.stringify(event)).not.toMatch(/whsec_/);
    }
  });
});
