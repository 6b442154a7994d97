import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import {
  type AuthorizedResourceCredentials,
  CREDENTIALS_ACTION,
} from '../../authz/authorized-credentials.js';
import type { IdentityHook } from '../../http/identity.js';
import { errorResponses } from '../../http/schemas.js';

const Credentials = Type.Object({
  resource: Type.String({ format: 'uuid' }),
  name: Type.String(),
  tenantUuid: Type.String({ format: 'uuid' }),
  isolation: Type.String(),
  host: Type.String(),
  port: Type.Integer(),
  database: Type.String(),
  schema: Type.Union([Type.String(), Type.Null()], { description: "pool: the tenant's schema" }),
  username: Type.String(),
  password: Type.String(),
  url: Type.String({ description: 'postgresql://user:password@host:port/database' }),
});

/** GET /v1/integration-resources/{ref}/credentials: a database resource's connection, never cached. */
export function registerCredentialsRoutes(
  app: FastifyInstance,
  credentials: AuthorizedResourceCredentials,
  identify: IdentityHook,
): void {
  app.get(
    '/v1/integration-resources/:ref/credentials',
    {
      // Decided on the resource itself (its tenant), by the service's decorator.
      config: { action: CREDENTIALS_ACTION, decidedBy: 'service' },
      schema: {
        operationId: 'getIntegrationResourceCredentials',
        summary:
          "A database resource's generated credentials (platform admins and the owning tenant's admins; " +
          'audited; Cache-Control: no-store). 409 credentials.not_provisioned until it is Ready.',
        tags: ['IntegrationResource'],
        params: Type.Object({
          ref: Type.String({ minLength: 1, maxLength: 300, description: 'UUID or slug' }),
        }),
        response: { 200: Credentials, ...errorResponses(400, 401, 403, 404, 409) },
      },
    },
    async (request, reply) => {
      // Set first: the answer, and any problem, is never stored by a cache.
      reply.header('cache-control', 'no-store').header('pragma', 'no-cache');
      const ctx = identify(request);
      return credentials.read(ctx, (request.params as { ref: string }).ref);
    },
  );
}
