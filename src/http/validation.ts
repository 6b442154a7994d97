import { Ajv } from 'ajv';
import addFormats from 'ajv-formats';
import type { FastifyInstance, FastifySchemaCompiler } from 'fastify';

/**
 * How route schemas are enforced (call before any route is registered):
 * - query strings, path parameters and headers: checked with coercion ("5" → 5, one value → array)
 *   and defaults; a violation answers 400 `<part>.invalid`;
 * - bodies: checked as sent (no coercion, no defaults); a violation answers 422 `body.invalid` with
 *   one JSON pointer per offending field (src/http/problem.ts). A request without a body (or `null`) is
 *   checked as `{}`, so an all-optional body may be left out;
 * - routes that take manifests (`config: { manifestBody: true }`) leave their body to the manifest
 *   parser, whose errors carry the manifest's own codes and pointers; the schema documents it.
 */
export function installValidation(app: FastifyInstance): void {
  const base = { allErrors: true, strict: false, removeAdditional: false } as const;
  const coercing = new Ajv({ ...base, coerceTypes: 'array', useDefaults: true });
  const exact = new Ajv({ ...base, coerceTypes: false, useDefaults: false });
  addFormats.default(coercing);
  addFormats.default(exact);

  const compile =
    (bodies: 'checked' | 'manifest'): FastifySchemaCompiler<unknown> =>
    ({ schema, httpPart }) => {
      if (httpPart !== 'body') return coercing.compile(schema as object);
      if (bodies === 'manifest') return () => true;
      const check = exact.compile(schema as object);
      return (data: unknown) => {
        if (check(data ?? {})) return true;
        return { error: Object.assign(new Error('body invalid'), { validation: check.errors ?? [] }) };
      };
    };
  app.setValidatorCompiler(compile('checked'));
  app.addHook('onRoute', (route) => {
    if ((route.config as { manifestBody?: boolean } | undefined)?.manifestBody)
      route.validatorCompiler = compile('manifest');
  });
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The body is manifests: the manifest parser validates it (with its codes), not the route schema. */
    manifestBody?: boolean;
    /**
     * Stable codes for body fields whose rule the route schema states (JSON pointer → code), e.g.
     * `{ '/name': 'override.unknown_limit' }`; the first such field's code becomes the answer's code.
     */
    fieldCodes?: Record<string, string>;
  }
}
