import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { LIFECYCLE_ACTIONS, type LifecycleAction } from '../../domain/lifecycle.js';
import { API_VERSION } from '../../domain/manifest.js';
import { ValidationError } from '../../errors/errors.js';
import { etagOf, ifMatchGeneration } from '../../http/etag.js';
import type { IdentityHook } from '../../http/identity.js';
import { DiffEntrySchema, errorResponses, manifestBody } from '../../http/schemas.js';
import { KIND_PATHS, KINDS, type Kind, LIST_FILTERS, manifestSchema } from '../../registry/kinds/index.js';
import type { RegistryApi } from '../../registry/registry.service.js';
import { lifecycleWorkflowId } from '../../workflows/start-lifecycle-workflow.js';

const RefParams = Type.Object({
  ref: Type.String({ minLength: 1, maxLength: 300, description: 'UUID or slug' }),
});

/** A single-object body may omit apiVersion and kind (the URL says them); pointers then start at the body. */
function singleDoc(kind: Kind, body: unknown): unknown {
  if (body === undefined || body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new ValidationError(
      'body.invalid',
      `The body must be one ${kind} manifest object.`,
      [{ pointer: '/', code: 'body.invalid', message: 'must be an object' }],
      400,
    );
  }
  const doc = body as Record<string, unknown>;
  if (doc.kind !== undefined && doc.kind !== kind) {
    throw ValidationError.field('/kind', 'manifest.kind_mismatch', `must be ${kind} on this route`);
  }
  return { apiVersion: API_VERSION, kind, ...doc };
}

/** Errors of a one-document apply point at `/0/...`; on single-object routes they point at the body. */
async function single<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (err) {
    if (err instanceof ValidationError) {
      for (const e of err.errors) e.pointer = e.pointer.replace(/^\/0(?=\/|$)/, '') || '/';
    }
    throw err;
  }
}

export function registerObjectRoutes(
  app: FastifyInstance,
  registry: RegistryApi,
  identify: IdentityHook,
  pageSizeMax: number,
): void {
  for (const kind of KINDS) {
    const base = `/v1/${KIND_PATHS[kind]}`;
    const tags = [kind];
    const ref = Type.Ref(kind);
    const filterNames = Object.keys(LIST_FILTERS[kind]);
    const area = kind.toLowerCase();
    // On /v1/tenants/:ref the ref names a tenant: checked against the caller's tenant.
    const tenantParam = kind === 'Tenant' ? { tenantParam: 'ref' } : {};

    app.post(
      base,
      {
        config: { action: `${area}.write`, ...tenantParam, idempotency: 'atomic', reportsChanges: true },
        schema: {
          operationId: `create${kind}`,
          summary: `Create a ${kind}`,
          tags,
          body: manifestBody(manifestSchema(kind)),
          headers: Type.Object({ 'idempotency-key': Type.Optional(Type.String({ maxLength: 200 })) }),
          response: { 201: ref, ...errorResponses(400, 401, 403, 409, 413, 415, 422) },
        },
      },
      async (request, reply) => {
        const ctx = identify(request);
        const [result] = await single(() =>
          registry.apply(ctx, [singleDoc(kind, request.body)], { mode: 'create' }),
        );
        if (!result) throw new Error('apply returned no result');
        return reply
          .code(201)
          .header('etag', etagOf(result.generation))
          .header('location', `${base}/${result.uuid}`)
          .send(
            result.generatedSecret
              ? { ...result.object, status: { ...result.object.status, secret: result.generatedSecret } }
              : result.object,
          );
      },
    );

    app.get(
      base,
      {
        config: { action: `${area}.read`, ...tenantParam },
        schema: {
          operationId: `list${kind}s`,
          summary: `List ${kind}s`,
          tags,
          querystring: Type.Object(
            {
              limit: Type.Optional(Type.Integer({ minimum: 1, maximum: pageSizeMax, default: 50 })),
              cursor: Type.Optional(Type.String({ maxLength: 1000 })),
              includeDeleted: Type.Optional(Type.Boolean()),
              ...Object.fromEntries(
                filterNames.map((f) => [f, Type.Optional(Type.String({ minLength: 1, maxLength: 300 }))]),
              ),
            },
            { additionalProperties: false },
          ),
          response: {
            200: Type.Object({
              items: Type.Array(ref),
              nextCursor: Type.Union([Type.String(), Type.Null()]),
            }),
            ...errorResponses(400, 401, 403),
          },
        },
      },
      async (request) => {
        const ctx = identify(request);
        const { limit, cursor, includeDeleted, ...filters } = request.query as Record<
          string,
          string | number | boolean | undefined
        >;
        return registry.list(ctx, kind, {
          limit: Number(limit ?? 50),
          cursor: cursor as string | undefined,
          includeDeleted: includeDeleted === true,
          filters: Object.fromEntries(Object.entries(filters).filter(([, v]) => v !== undefined)) as Record<
            string,
            string
          >,
        });
      },
    );

    app.get(
      `${base}/:ref`,
      {
        config: { action: `${area}.read`, ...tenantParam },
        schema: {
          operationId: `get${kind}`,
          summary: `Get a ${kind} by UUID or slug`,
          tags,
          params: RefParams,
          querystring: Type.Object(
            { includeDeleted: Type.Optional(Type.Boolean()) },
            { additionalProperties: false },
          ),
          response: { 200: ref, ...errorResponses(400, 401, 403, 404) },
        },
      },
      async (request, reply) => {
        const ctx = identify(request);
        const { ref: r } = request.params as { ref: string };
        // Serialised once per object version (src/registry/object-cache.ts); sent as it is.
        const served = await registry.serve(ctx, kind, r, {
          includeDeleted: (request.query as { includeDeleted?: boolean }).includeDeleted === true,
        });
        return reply
          .header('etag', etagOf(served.metadata.generation))
          .type('application/json; charset=utf-8')
          .send(served.json);
      },
    );

    app.put(
      `${base}/:ref`,
      {
        config: { action: `${area}.write`, ...tenantParam, reportsChanges: true },
        schema: {
          operationId: `replace${kind}`,
          summary: `Replace a ${kind}'s desired state (If-Match for optimistic concurrency)`,
          tags,
          params: RefParams,
          body: manifestBody(manifestSchema(kind)),
          headers: Type.Object({ 'if-match': Type.Optional(Type.String()) }),
          response: { 200: ref, ...errorResponses(400, 401, 403, 404, 409, 412, 413, 415, 422) },
        },
      },
      async (request, reply) => {
        const ctx = identify(request);
        const { ref: r } = request.params as { ref: string };
        const expectedGeneration = ifMatchGeneration(request.headers['if-match']);
        const current = await registry.get(ctx, kind, r);
        const [result] = await single(() =>
          registry.apply(ctx, [singleDoc(kind, request.body)], {
            mode: 'replace',
            target: { kind, id: current.metadata.uuid },
            expectedGeneration,
          }),
        );
        if (!result) throw new Error('apply returned no result');
        return reply.header('etag', etagOf(result.generation)).send(result.object);
      },
    );

    app.delete(
      `${base}/:ref`,
      {
        config: { action: `${area}.delete`, ...tenantParam },
        schema: {
          operationId: `delete${kind}`,
          summary:
            kind === 'Tenant'
              ? 'Delete an archived tenant (its deployments and resources first), leaving a tombstone'
              : `Delete a ${kind}, leaving a tombstone`,
          tags,
          params: RefParams,
          headers: Type.Object({ 'if-match': Type.Optional(Type.String()) }),
          response: { 200: ref, ...errorResponses(400, 401, 403, 404, 409, 412) },
        },
      },
      async (request, reply) => {
        const ctx = identify(request);
        const { ref: r } = request.params as { ref: string };
        const obj = await registry.delete(ctx, kind, r, ifMatchGeneration(request.headers['if-match']));
        if (kind !== 'Tenant') return obj;
        // Deleting a tenant starts its deletion workflow (src/workflows/retention.ts).
        const workflowId = lifecycleWorkflowId(obj.metadata.uuid, obj.metadata.generation);
        return reply
          .header('tenantry-workflow', workflowId)
          .header('link', `</v1/workflows/${workflowId}>; rel="monitor"`)
          .send(obj);
      },
    );

    app.get(
      `${base}/:ref/history`,
      {
        config: { action: `${area}.read`, ...tenantParam },
        schema: {
          operationId: `get${kind}History`,
          summary: `The lineage of a ${kind}: every desired-state version`,
          tags,
          params: RefParams,
          response: {
            200: Type.Object({
              items: Type.Array(
                Type.Object({
                  generation: Type.Integer(),
                  action: Type.String(),
                  state: Type.Unknown(),
                  changes: Type.Array(DiffEntrySchema),
                  actor: Type.Unknown(),
                  requestId: Type.String(),
                  correlationId: Type.String(),
                  createdAt: Type.String({ format: 'date-time' }),
                }),
              ),
            }),
            ...errorResponses(400, 401, 403, 404),
          },
        },
      },
      async (request) => {
        const ctx = identify(request);
        return { items: await registry.history(ctx, kind, (request.params as { ref: string }).ref) };
      },
    );
  }

  for (const action of LIFECYCLE_ACTIONS.filter((a) => a !== 'delete')) {
    app.post(
      `/v1/tenants/:ref/${action}`,
      {
        config: { action: `tenant.${action}`, tenantParam: 'ref', idempotency: 'atomic' },
        schema: {
          operationId: `${action}Tenant`,
          summary: `Lifecycle: ${action} a tenant`,
          tags: ['Tenant'],
          params: RefParams,
          headers: Type.Object({ 'if-match': Type.Optional(Type.String()) }),
          response: { 200: { $ref: 'Tenant' }, ...errorResponses(400, 401, 403, 404, 409, 412) },
        },
      },
      async (request, reply) => {
        const ctx = identify(request);
        const obj = await registry.transition(
          ctx,
          (request.params as { ref: string }).ref,
          action as LifecycleAction,
          ifMatchGeneration(request.headers['if-match']),
        );
        // The workflow that makes the transition true (src/workflows); its id derives from the change.
        const workflowId = lifecycleWorkflowId(obj.metadata.uuid, obj.metadata.generation);
        return reply
          .header('etag', etagOf(obj.metadata.generation))
          .header('tenantry-workflow', workflowId)
          .header('link', `</v1/workflows/${workflowId}>; rel="monitor"`)
          .send(obj);
      },
    );
  }
}
