import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';

/** RFC 9457 problem details, the body of every error answer (src/http/problem.ts builds them). */
export const ProblemSchema = Type.Object(
  {
    type: Type.String(),
    title: Type.String(),
    status: Type.Integer(),
    detail: Type.String(),
    code: Type.String({ description: 'stable machine-readable error code' }),
    instance: Type.Optional(Type.String()),
    errors: Type.Optional(
      Type.Array(
        Type.Object({
          pointer: Type.String({ description: 'JSON pointer (RFC 6901)' }),
          code: Type.String(),
          detail: Type.String(),
        }),
      ),
    ),
  },
  { $id: 'Problem', description: 'RFC 9457 problem details' },
);

/** OpenAPI responses for the given error statuses, each a problem+json body. */
export const errorResponses = (...statuses: number[]) =>
  Object.fromEntries(
    statuses.map((s) => [
      s,
      {
        description: 'Problem details',
        content: { 'application/problem+json': { schema: Type.Ref('Problem') } },
      },
    ]),
  );

/**
 * Documents the error answers the shared hooks give, on every route they can happen (call before
 * the OpenAPI plugin is registered): 401 and 403 on every authenticated route (authentication,
 * authorization), 429 on rate-limited ones, 414 on routes with path parameters (one over the router's
 * length), 400 on routes with a query, path or header schema, 422 on routes whose body schema is
 * enforced. A route keeps what it declares itself.
 */
export function documentErrorAnswers(app: FastifyInstance): void {
  app.addHook('onRoute', (route) => {
    const schema = route.schema as
      | { hide?: boolean; response?: Record<string, unknown>; [part: string]: unknown }
      | undefined;
    if (!schema || schema.hide) return;
    const config = (route.config ?? {}) as {
      public?: boolean;
      rateLimit?: boolean;
      manifestBody?: boolean;
    };
    const statuses: number[] = [];
    if (schema.querystring || schema.params || schema.headers) statuses.push(400);
    if (!config.public) statuses.push(401, 403);
    if (route.url.includes('/:')) statuses.push(414);
    if (schema.body && !config.manifestBody) statuses.push(422);
    if (!config.public && route.url.startsWith('/v1/') && config.rateLimit !== false) statuses.push(429);
    const response = schema.response ?? {};
    const missing = statuses.filter((s) => response[s] === undefined && response[String(s)] === undefined);
    if (missing.length > 0) schema.response = { ...response, ...errorResponses(...missing) };
  });
}
