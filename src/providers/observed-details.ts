/**
 * What a provider observed of a resource (`ObservedResource.details`: host, port, database, …) as
 * the controller writes it into the Ready condition's message (`postgres: host=…, port=5432, …`),
 * and read back from it: the control plane keeps no other copy of the connection details.
 * Values never contain `, ` (names, hosts, numbers and secret references only).
 */
export const formatDetails = (details: Record<string, unknown>): string =>
  Object.entries(details)
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(', ');

/** The details of a Ready message written by `formatDetails` after `<provider>: `. */
export function parseDetails(message: string): Record<string, string> {
  const body = message.slice(message.indexOf(': ') + 2);
  const out: Record<string, string> = {};
  for (const part of body.split(', ')) {
    const eq = part.indexOf('=');
    if (eq > 0) out[part.slice(0, eq)] = part.slice(eq + 1);
  }
  return out;
}

/**
 * The Ready condition of a resource its provider observed (or ensured) in sync: the controller's
 * reconcile, a cell's agent and a move's arriving side (src/tenant-migrations/arrived-status.ts)
 * write the same one, so `parseDetails` reads each alike.
 */
export const provisionedCondition = (provider: string, details: Record<string, unknown>) => ({
  status: 'True' as const,
  reason: 'Provisioned',
  message: `${provider}: ${formatDetails(details)}`,
});
