import { PassThrough } from 'node:stream';
import { type Static, Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { AuditService } from '../../audit/audit.service.js';
import type { IdentityHook } from '../../http/identity.js';
import { errorResponses } from '../../http/schemas.js';

const TenantRef = Type.String({
  minLength: 1,
  maxLength: 300,
  description: 'tenant UUID or slug, or "platform" for records of no tenant',
});
const Time = Type.String({ maxLength: 64, description: 'ISO 8601 time' });

const SearchQuery = Type.Object(
  {
    tenant: Type.Optional(TenantRef),
    actor: Type.Optional(Type.String({ maxLength: 300 })),
    action: Type.Optional(Type.String({ maxLength: 200, description: 'exact, or a prefix ending in .*' })),
    outcome: Type.Optional(Type.String({ maxLength: 20, description: 'success | failure | denied' })),
    targetKind: Type.Optional(Type.String({ maxLength: 100 })),
    targetId: Type.Optional(Type.String({ maxLength: 64 })),
    targetSlug: Type.Optional(Type.String({ maxLength: 300 })),
    correlationId: Type.Optional(Type.String({ maxLength: 200 })),
    requestId: Type.Optional(Type.String({ maxLength: 200 })),
    from: Type.Optional(Time),
    to: Type.Optional(Time),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 500, default: 50 })),
    cursor: Type.Optional(Type.String({ maxLength: 500 })),
  },
  { additionalProperties: false },
);

const AuditRecordSchema = Type.Object(
  {
    id: Type.String({ format: 'uuid' }),
    chain: Type.String(),
    seq: Type.Union([Type.Integer(), Type.Null()], {
      description: 'position in the chain; null until the sequencer integrates the record (within a second)',
    }),
    time: Type.String(),
    tenantId: Type.Union([Type.String(), Type.Null()]),
    action: Type.String(),
    outcome: Type.String(),
    hash: Type.Union([Type.String(), Type.Null()]),
    prevHash: Type.Union([Type.String(), Type.Null()]),
  },
  { additionalProperties: true, description: 'an audit record (format tenantry.audit.v1)' },
);

const Problem = Type.Object(
  {
    code: Type.String(),
    chain: Type.Union([Type.String(), Type.Null()]),
    seq: Type.Optional(Type.Integer()),
    recordId: Type.Optional(Type.String()),
    checkpointId: Type.Optional(Type.String()),
    message: Type.String(),
  },
  { additionalProperties: false },
);
const Verification = Type.Object(
  {
    ok: Type.Boolean(),
    records: Type.Integer(),
    chains: Type.Array(Type.Object({}, { additionalProperties: true })),
    checkpoints: Type.Object({
      total: Type.Integer(),
      valid: Type.Integer(),
      latest: Type.Union([Type.String(), Type.Null()]),
    }),
    problems: Type.Array(Problem),
    firstProblem: Type.Optional(Problem),
    unsequenced: Type.Object(
      { records: Type.Integer(), oldest: Type.Union([Type.String(), Type.Null()]) },
      {
        description:
          'records written but not yet integrated into their chain by the sequencer (not verified)',
      },
    ),
  },
  { additionalProperties: false },
);

export function registerAuditRoutes(app: FastifyInstance, audit: AuditService, identify: IdentityHook): void {
  const tags = ['Audit'];

  app.get<{ Querystring: Static<typeof SearchQuery> }>(
    '/v1/audit',
    {
      config: { action: 'audit.read' },
      schema: {
        operationId: 'searchAudit',
        summary: 'Search audit records, newest first',
        tags,
        querystring: SearchQuery,
        response: {
          200: Type.Object({
            items: Type.Array(AuditRecordSchema),
            nextCursor: Type.Union([Type.String(), Type.Null()]),
          }),
          ...errorResponses(400, 403, 404),
        },
      },
    },
    async (request) => {
      const { outcome, ...rest } = request.query;
      return audit.search(await identify(request), {
        ...rest,
        ...(outcome !== undefined ? { outcome: outcome as never } : {}),
      });
    },
  );

  app.get<{ Querystring: { tenant?: string } }>(
    '/v1/audit/verify',
    {
      config: { action: 'audit.read' },
      schema: {
        operationId: 'verifyAudit',
        summary: 'Recompute the hash chains and check the signed checkpoints',
        description:
          'Answers 200 either way; `ok` is false when anything was altered, deleted or reordered, and ' +
          '`firstProblem` names the first bad record of the first broken chain.',
        tags,
        querystring: Type.Object({ tenant: Type.Optional(TenantRef) }, { additionalProperties: false }),
        response: { 200: Verification, ...errorResponses(400, 403, 404) },
      },
    },
    async (request) => audit.verify(await identify(request), request.query.tenant),
  );

  app.get<{ Querystring: { tenant?: string; since?: string; until?: string } }>(
    '/v1/audit/export',
    {
      config: { action: 'audit.export' },
      schema: {
        operationId: 'exportAudit',
        summary: 'Export the audit log as JSON Lines (tenantry.audit.v1), verifiable offline',
        description:
          'One consistent snapshot: the signed checkpoints, then the records of each chain in order. ' +
          'With since/until, the contiguous part of each chain written in that window. Verify the file ' +
          'with `tenantry audit verify --file F --public-key K`.',
        tags,
        querystring: Type.Object(
          { tenant: Type.Optional(TenantRef), since: Type.Optional(Time), until: Type.Optional(Time) },
          { additionalProperties: false },
        ),
        response: {
          200: {
            description: 'JSON Lines',
            content: { 'application/x-ndjson': { schema: Type.String() } },
          },
          ...errorResponses(400, 403, 404),
        },
      },
    },
    async (request, reply) => {
      const run = await audit.prepareExport(await identify(request), request.query);
      const out = new PassThrough();
      run(out).then(
        () => out.end(),
        (err: unknown) => {
          request.log.error({ err }, 'audit export failed mid-stream');
          out.destroy(err as Error);
        },
      );
      return reply
        .header('content-type', 'application/x-ndjson')
        .header('content-disposition', 'attachment; filename="tenantry-audit.jsonl"')
        .send(out);
    },
  );

  const TreeHead = Type.Object(
    {
      chain: Type.String(),
      origin: Type.String(),
      size: Type.Integer(),
      rootHash: Type.String(),
      checkpoint: Type.String({ description: 'C2SP signed note (tlog-checkpoint, Ed25519)' }),
    },
    { additionalProperties: false },
  );

  app.get<{ Querystring: { tenant?: string } }>(
    '/v1/audit/checkpoint',
    {
      config: { action: 'audit.read' },
      schema: {
        operationId: 'auditCheckpoint',
        summary: "The signed checkpoint of a chain's Merkle tree (RFC 9162) as a C2SP signed note",
        description:
          "A tenant gets its own log's; the platform names a tenant or 'platform' (the default). Save the " +
          '`checkpoint` text and later run `tenantry audit verify --checkpoint FILE`.',
        tags,
        querystring: Type.Object({ tenant: Type.Optional(TenantRef) }, { additionalProperties: false }),
        response: { 200: TreeHead, ...errorResponses(400, 403, 404, 409) },
      },
    },
    async (request) => audit.treeHead(await identify(request), request.query.tenant),
  );

  app.get<{ Querystring: { tenant?: string } }>(
    '/v1/audit/checkpoint/cosigned',
    {
      config: { action: 'audit.read' },
      schema: {
        operationId: 'auditCosignedCheckpoint',
        summary:
          "The largest checkpoint of a chain's log that witnesses cosigned (c2sp.org/tlog-cosignature)",
        description:
          'The signed note with every witness cosignature kept for it (TENANTRY_AUDIT_WITNESSES); `cosigned` ' +
          'is null until a witness has cosigned this log. Check it offline with ' +
          '`tenantry audit verify-checkpoint FILE --public-key PEM --witness VKEY`.',
        tags,
        querystring: Type.Object({ tenant: Type.Optional(TenantRef) }, { additionalProperties: false }),
        response: {
          200: Type.Object(
            {
              chain: Type.String(),
              cosigned: Type.Union([
                Type.Object(
                  {
                    size: Type.Integer(),
                    rootHash: Type.String(),
                    checkpoint: Type.String({
                      description: 'C2SP signed note with the witness cosignature lines',
                    }),
                    witnesses: Type.Array(Type.String(), {
                      description: 'Names of the witnesses that cosigned it',
                    }),
                  },
                  { additionalProperties: false },
                ),
                Type.Null(),
              ]),
            },
            { additionalProperties: false },
          ),
          ...errorResponses(400, 403, 404),
        },
      },
    },
    async (request) => audit.cosignedTreeHead(await identify(request), request.query.tenant),
  );

  app.get<{ Params: { id: string } }>(
    '/v1/audit/records/:id/proof',
    {
      config: { action: 'audit.read' },
      schema: {
        operationId: 'auditInclusionProof',
        summary:
          "The inclusion proof of one audit record in its chain's Merkle tree, with the signed checkpoint",
        tags,
        params: Type.Object({ id: Type.String({ maxLength: 64 }) }),
        response: {
          200: Type.Object(
            {
              recordId: Type.String(),
              chain: Type.String(),
              leafIndex: Type.Integer(),
              treeSize: Type.Integer(),
              leafHash: Type.String(),
              proof: Type.Array(Type.String()),
              checkpoint: TreeHead,
            },
            { additionalProperties: false },
          ),
          ...errorResponses(400, 404, 409),
        },
      },
    },
    async (request) => audit.inclusion(await identify(request), request.params.id),
  );

  app.get<{ Querystring: { tenant?: string; from?: number; to?: number } }>(
    '/v1/audit/consistency',
    {
      config: { action: 'audit.read' },
      schema: {
        operationId: 'auditConsistencyProof',
        summary: "An RFC 9162 consistency proof between two sizes of a chain's Merkle tree",
        tags,
        querystring: Type.Object(
          {
            tenant: Type.Optional(TenantRef),
            from: Type.Optional(
              Type.Integer({ minimum: 0, default: 0, description: 'default: 0 (an empty proof)' }),
            ),
            to: Type.Optional(Type.Integer({ minimum: 0, description: 'default: the current size' })),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object(
            {
              chain: Type.String(),
              from: Type.Integer(),
              to: Type.Integer(),
              proof: Type.Array(Type.String()),
              checkpoint: TreeHead,
            },
            { additionalProperties: false },
          ),
          ...errorResponses(400, 403, 404, 409, 422),
        },
      },
    },
    async (request) => {
      const { from = 0, ...rest } = request.query;
      return audit.consistency(await identify(request), { ...rest, from });
    },
  );

  app.get(
    '/v1/audit/public-key',
    {
      config: { action: 'audit.read' },
      schema: {
        operationId: 'auditPublicKey',
        summary: 'The Ed25519 public key that signs audit checkpoints (for offline verification)',
        tags,
        response: {
          200: Type.Object({ keyId: Type.String(), algorithm: Type.Literal('Ed25519'), pem: Type.String() }),
        },
      },
    },
    async () => audit.publicKey(),
  );

  app.post(
    '/v1/audit/checkpoints',
    {
      config: { action: 'audit.checkpoint' },
      schema: {
        operationId: 'createAuditCheckpoint',
        summary: 'Sign a checkpoint of every chain head now',
        tags,
        response: {
          201: Type.Object(
            {
              id: Type.String(),
              time: Type.String(),
              keyId: Type.String(),
              heads: Type.Record(Type.String(), Type.Object({ seq: Type.Integer(), hash: Type.String() })),
              signature: Type.String(),
            },
            { additionalProperties: false },
          ),
          ...errorResponses(403),
        },
      },
    },
    async (request, reply) => reply.code(201).send(await audit.checkpoint(await identify(request))),
  );
}
