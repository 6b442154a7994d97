import formbody from '@fastify/formbody';
import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { UnauthorizedError, ValidationError } from '../errors/errors.js';
import type { IdentityHook } from '../http/identity.js';
import { problem, sendProblem } from '../http/problem.js';
import { errorResponses } from '../http/schemas.js';
import type { ServiceClientsService } from './service-clients.js';

type TokenBody = { grant_type?: string; client_id?: string; client_secret?: string; scope?: string };

/** The client id and secret of HTTP Basic client authentication (RFC 6749 §2.3.1), if given. */
function basicCredentials(header: string | undefined): { id: string; secret: string } | undefined {
  if (!header?.toLowerCase().startsWith('basic ')) return undefined;
  const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) throw new UnauthorizedError('oauth.invalid_client', 'Malformed Basic credentials.');
  // The form-urlencoding of RFC 6749 §2.3.1 applies to both parts.
  return {
    id: decodeURIComponent(decoded.slice(0, colon).replace(/\+/g, ' ')),
    secret: decodeURIComponent(decoded.slice(colon + 1).replace(/\+/g, ' ')),
  };
}

/**
 * A tenant's service credentials (issued by activation) and the client-credentials token endpoint
 * of the built-in issuer. The token endpoint is public: the client authenticates itself.
 */
export async function registerServiceClientRoutes(
  app: FastifyInstance,
  clients: ServiceClientsService,
  identify: IdentityHook,
): Promise<void> {
  app.get<{ Params: { ref: string } }>(
    '/v1/tenants/:ref/service-credentials',
    {
      config: { action: 'tenant.credentials', tenantParam: 'ref' },
      schema: {
        operationId: 'getTenantServiceCredentials',
        summary:
          "The tenant's service client (issued by activation): client id and secret for the client-credentials grant at /v1/oauth/token",
        tags: ['Identity'],
        params: Type.Object({ ref: Type.String({ minLength: 1, maxLength: 100 }) }),
        response: {
          200: Type.Object({
            clientId: Type.String(),
            clientSecret: Type.String(),
            tenantId: Type.String({ format: 'uuid' }),
            roles: Type.Array(Type.String()),
            createdAt: Type.String(),
            tokenEndpoint: Type.String(),
          }),
          ...errorResponses(400, 401, 403, 404),
        },
      },
    },
    async (request) =>
      clients.credentials(identify(request), request.params.ref, `${request.protocol}://${request.host}`),
  );

  await app.register(async (c) => {
    await c.register(formbody, { bodyLimit: 16 * 1024 });
    c.post<{ Body: TokenBody }>(
      '/v1/oauth/token',
      {
        // The client authenticates itself; the per-tenant rate limit needs a caller it does not have,
        // so the endpoint has its own: per client id and per source address (TOKEN_RATE).
        config: { public: true, rateLimit: false } as { public: true },
        schema: {
          operationId: 'oauthToken',
          summary:
            "Client-credentials grant (RFC 6749 §4.4): a tenant's service client gets a service token scoped to its tenant",
          tags: ['Identity'],
          security: [],
          body: Type.Object(
            {
              grant_type: Type.Optional(Type.String({ maxLength: 100 })),
              client_id: Type.Optional(Type.String({ maxLength: 200 })),
              client_secret: Type.Optional(Type.String({ maxLength: 500 })),
              scope: Type.Optional(Type.String({ maxLength: 500 })),
            },
            { additionalProperties: false },
          ),
          response: {
            200: Type.Object({
              access_token: Type.String(),
              token_type: Type.Literal('Bearer'),
              expires_in: Type.Integer(),
            }),
            ...errorResponses(400, 401, 422, 429),
          },
        },
      },
      async (request, reply) => {
        const b = request.body ?? {};
        if (b.grant_type !== 'client_credentials')
          throw ValidationError.field(
            '/grant_type',
            'oauth.unsupported_grant_type',
            'grant_type must be client_credentials',
          );
        const basic = basicCredentials(request.headers.authorization);
        const id = basic?.id ?? b.client_id;
        const secret = basic?.secret ?? b.client_secret;
        if (!id || !secret)
          throw new UnauthorizedError('oauth.invalid_client', 'Client authentication is required.');
        const refused = await clients.admitToken(id, request.ip);
        if (refused) {
          reply.header('retry-after', String(refused.resetSeconds));
          return sendProblem(
            reply,
            problem(
              429,
              'oauth.rate_limited',
              `Too many token requests for this ${refused.scope === 'client' ? 'client' : 'address'} (${refused.limit} per ${refused.windowSeconds}s); retry in ${refused.resetSeconds}s.`,
              [],
              {
                instance: request.id,
                details: { scope: refused.scope, limit: refused.limit, windowSeconds: refused.windowSeconds },
              },
            ),
          );
        }
        return reply.header('cache-control', 'no-store').send(await clients.token(id, secret));
      },
    );
  });
}
