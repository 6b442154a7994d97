import { TenantryError } from '../errors/errors.js';

/**
 * A change refused by placement, residency, plan or quota policy before anything was written:
 * the code names the rule (`placement.residency_violation`, `quota.exceeded`, …), `errors` carries
 * the JSON pointer, `details` the numbers (quota, current use, limit) or the rule's inputs.
 */
export class PolicyError extends TenantryError {
  constructor(
    code: string,
    status: number,
    message: string,
    pointer: string,
    details: Record<string, unknown>,
    /** What the refused attempt was, for the audit record of the denial. */
    readonly attempt: { tenantId: string | null; kind: string; slug: string; action: string },
  ) {
    super(code, status, message, { errors: [{ pointer, code, message }], details });
  }
}
