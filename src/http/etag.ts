import { ValidationError } from '../errors/errors.js';

export const etagOf = (generation: number): string => `"${generation}"`;

/** The generation an If-Match header names; undefined when absent or `*`. */
export function ifMatchGeneration(header: string | string[] | undefined): number | undefined {
  if (header === undefined) return undefined;
  const value = (Array.isArray(header) ? header[0] : header)?.trim() ?? '';
  if (value === '*') return undefined;
  const m = /^(?:W\/)?"(\d{1,15})"$/.exec(value);
  if (!m?.[1]) {
    throw new ValidationError(
      'header.if_match',
      'If-Match must be an ETag this server issued, e.g. "3".',
      [{ pointer: '/headers/if-match', code: 'header.if_match', message: 'malformed' }],
      400,
    );
  }
  return Number(m[1]);
}
