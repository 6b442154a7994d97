/**
 * Each audit chain (a tenant's, or the platform's) is also a transparency log: an RFC 9162 Merkle
 * tree whose entry i is the 32-byte hash of the record at seq i + 1 (format v1), so every record
 * written before the tree existed is already a leaf. Per-tenant logs, not one log: a tenant's
 * checkpoint, proofs and export then say nothing about other tenants (not even the log's size).
 *
 * Checkpoints are C2SP signed notes with the origin `<origin>/<chain>`.
 */
export const AUDIT_LOG_ORIGIN = 'tenantry/audit';

export const logOrigin = (chain: string): string => `${AUDIT_LOG_ORIGIN}/${chain}`;

export function chainOfOrigin(origin: string): string | undefined {
  const prefix = `${AUDIT_LOG_ORIGIN}/`;
  return origin.startsWith(prefix) ? origin.slice(prefix.length) : undefined;
}
