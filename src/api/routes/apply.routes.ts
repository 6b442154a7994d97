import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { parseDocuments } from '../../domain/manifest-parser.js';
import { ValidationError } from '../../errors/errors.js';
import type { IdentityHook } from '../../http/identity.js';
import { DiffEntrySchema, errorResponses, manifestBody } from '../../http/schemas.js';
import type { RegistryApi } from '../../registry/registry.service.js';

function documentsOf(body: unknown): unknown[] {
  if (typeof body === 'string') return parseDocuments(body);
  if (Array.isArray(body)) return body;
  if (body && typeof body === 'object') {
    const b = body as Record<string, unknown>;
    if (b.kind === 'List' && Array.isArray(b.items)) return b.items;
    return [body];
  }
  return [];
}

export function registerApplyRoute(
  app: FastifyInstance,
  registry: RegistryApi,
  identify: IdentityHook,
): void {
  app.post(
    '/v1/apply',
    {
      config: { action: 'registry.apply', idempotency: 'atomic', reportsChanges: true },
      schema: {
        operationId: 'apply',
        summary: 'Apply manifests (multi-document YAML or JSON) in dependency order, all or nothing',
        description:
          'Idempotent: applying the same manifests again reports every object "unchanged" and bumps no generation. ' +
          'With dryRun=true nothing is written; the response says what would change per object, with the ' +
          'placement decision and the policy verdicts a real apply would meet (a refusal is the same 4xx).',
        tags: ['Apply'],
        querystring: Type.Object({ dryRun: Type.Optional(Type.Boolean()) }, { additionalProperties: false }),
        body: manifestBody(
          Type.Unknown({
            description: 'YAML (application/yaml) or JSON: one manifest, an array, or {kind: List, items}',
          }),
        ),
        response: {
          200: Type.Object({
            dryRun: Type.Boolean(),
            summary: Type.Object({
              created: Type.Integer(),
              configured: Type.Integer(),
              unchanged: Type.Integer(),
            }),
            results: Type.Array(
              Type.Object({
                kind: Type.String(),
                name: Type.String(),
                uuid: Type.String({ format: 'uuid' }),
                action: Type.Union([
                  Type.Literal('created'),
                  Type.Literal('configured'),
                  Type.Literal('unchanged'),
                ]),
                generation: Type.Integer(),
                changes: Type.Array(DiffEntrySchema),
                verdicts: Type.Optional(
                  Type.Array(
                    Type.Object({
                      rule: Type.String(),
                      outcome: Type.Literal('allow'),
                      detail: Type.String(),
                    }),
                    { description: 'placement, residency, plan and quota checks the change met' },
                  ),
                ),
                placement: Type.Optional(
                  Type.Unknown({
                    description: 'Tenant: the placement decision (its binding to a cell); null: unplaced',
                  }),
                ),
                secret: Type.Optional(
                  Type.String({ description: 'a generated WebhookEndpoint signing secret, shown this once' }),
                ),
              }),
            ),
          }),
          ...errorResponses(400, 401, 403, 409, 412, 413, 415, 422),
        },
      },
    },
    async (request) => {
      const ctx = identify(request);
      const docs = documentsOf(request.body);
      if (docs.length === 0)
        throw new ValidationError(
          'body.empty',
          'The body holds no manifest.',
          [{ pointer: '/', code: 'body.empty', message: 'no documents' }],
          400,
        );
      const dryRun = (request.query as { dryRun?: boolean }).dryRun === true;
      const results = await registry.apply(ctx, docs, { dryRun });
      const summary = { created: 0, configured: 0, unchanged: 0 };
      for (const r of results) if (r.action in summary) summary[r.action as keyof typeof summary]++;
      return {
        dryRun,
        summary,
        results: results.map(({ object: _object, generatedSecret, ...r }) =>
          generatedSecret ? { ...r, secret: generatedSecret } : r,
        ),
      };
    },
  );
}
