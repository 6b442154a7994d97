import type { FastifyInstance } from 'fastify';
import { TenantryError } from '../errors/errors.js';

/** Deeper JSON than any manifest needs; deeper input made JSON.stringify and the validators throw. */
export const MAX_BODY_DEPTH = 64;

/**
 * Pure: the first place in `value` that no request may hold: a NUL character in a string or a key
 * (PostgreSQL cannot store one in text or jsonb), or nesting deeper than MAX_BODY_DEPTH. Iterative,
 * so that arbitrarily deep input cannot overflow the stack here either.
 */
export function findBadInput(
  value: unknown,
  at = '',
): { pointer: string; reason: 'nul' | 'depth' } | undefined {
  const stack: [unknown, string, number][] = [[value, at, 0]];
  while (stack.length > 0) {
    const [v, pointer, depth] = stack.pop()!;
    if (typeof v === 'string') {
      if (v.includes('\0')) return { pointer, reason: 'nul' };
      continue;
    }
    if (!v || typeof v !== 'object') continue;
    if (depth >= MAX_BODY_DEPTH) return { pointer, reason: 'depth' };
    for (const [k, x] of Object.entries(v)) {
      const p = `${pointer}/${k.replaceAll('~', '~0').replaceAll('/', '~1')}`;
      if (k.includes('\0')) return { pointer: p, reason: 'nul' };
      stack.push([x, p, depth + 1]);
    }
  }
  return undefined;
}

/**
 * Refuses, before any hook that touches the database, input that cannot be stored or handled: a
 * NUL byte in the path, query or body (400 `request.invalid_character`), or a body nested deeper
 * than MAX_BODY_DEPTH (400 `body.too_deep`). YAML bodies are checked once parsed, by the same rule.
 */
export function registerInputGuard(app: FastifyInstance): void {
  app.addHook('preValidation', async (request) => {
    let path: string;
    let decoded = true;
    try {
      path = decodeURIComponent(request.url);
    } catch {
      path = request.url;
      decoded = false;
    }
    // Parameters and the (flat) query come from the URL: once it decodes without a NUL, only the
    // body is left to look at. An undecodable URL is looked at field by field.
    const bad = path.includes('\0')
      ? { pointer: path.split('?')[0]!.includes('\0') ? '/path' : '/query', reason: 'nul' as const }
      : ((decoded
          ? undefined
          : (findBadInput(request.params, '/path') ?? findBadInput(request.query, '/query'))) ??
        (request.body === undefined ? undefined : findBadInput(request.body)));
    if (!bad) return;
    // Thrown, so that each surface answers in its own form (problem+json, the console's page).
    throw bad.reason === 'nul'
      ? new TenantryError(
          'request.invalid_character',
          400,
          'The request contains a NUL character, which no field may hold.',
          {
            errors: [{ pointer: bad.pointer, code: 'request.invalid_character', message: 'NUL character' }],
          },
        )
      : new TenantryError('body.too_deep', 400, `The body is nested deeper than ${MAX_BODY_DEPTH} levels.`, {
          errors: [
            { pointer: bad.pointer, code: 'body.too_deep', message: `deeper than ${MAX_BODY_DEPTH} levels` },
          ],
        });
  });
}
