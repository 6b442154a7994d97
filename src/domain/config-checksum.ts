import { createHash } from 'node:crypto';
import canonicalizeModule from 'canonicalize';

// The package is CommonJS (`module.exports = serialize`); its typings declare an ES default export.
const canonicalize = canonicalizeModule as unknown as (input: unknown) => string | undefined;

/**
 * A configuration version's content as RFC 8785 canonical JSON (the `canonicalize` package, by the
 * RFC's author) and its checksum: lowercase hex SHA-256 of that text's UTF-8 bytes. Equal content
 * gives an equal checksum in any process, whatever the key order or number spelling it was written in.
 */
export function canonicalJson(content: unknown): string {
  const text = canonicalize(content);
  if (text === undefined) throw new TypeError('configuration content is not JSON');
  return text;
}

export function configChecksum(content: unknown): string {
  return createHash('sha256').update(canonicalJson(content), 'utf8').digest('hex');
}
