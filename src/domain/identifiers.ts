/**
 * Identity and naming rules of DESIGN.md §1. Pure: no I/O.
 */
import { v7 as uuidv7 } from 'uuid';

/** 8-4-4-4-12 hexadecimal, as PostgreSQL and RFC 9562 spell it; the nil UUID is refused. */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const NIL = '00000000-0000-0000-0000-000000000000';

export function isUuid(value: string): boolean {
  return UUID.test(value) && value !== NIL;
}

/**
 * The UUID of an object the registry creates without one given: a UUIDv7 (RFC 9562), time-ordered
 * (milliseconds, then a counter within one), so that a new object's keys land at the end of the
 * indexes they are in (its table's, its reconcile job's) next to the objects created just before it,
 * rather than each on a page of its own: in a registry of 100k tenants, a random UUID's index entry
 * was one more page written, a full-page image in the WAL and often a read, per index and per write
 * of a new key (issue 24). Keys stored before, random (v4), and those given in `metadata.uuid` stay
 * valid: only the order of new entries changes. Its first 48 bits are the creation time, which the
 * object shows anyway (`createdAt`).
 */
export function newObjectId(): string {
  return uuidv7();
}

/** One lowercase DNS label (RFC 1123): letters, digits and inner hyphens, 1..63 characters. */
export const LABEL_PATTERN = '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$';
const LABEL = new RegExp(LABEL_PATTERN);
/** A label used as one part of a slug: no hyphen inside, so that slugs split unambiguously. */
export const PART_PATTERN = '^[a-z0-9]{1,30}$';
/** A qualifier or system slug may carry inner hyphens (`internal-abs`). */
export const SEGMENT_PATTERN = '^[a-z0-9]([a-z0-9-]{0,28}[a-z0-9])?$';

export function isLabel(value: string): boolean {
  return LABEL.test(value);
}

export interface TenantSlugParts {
  prefix: string;
  region: string;
  environmentType: string;
  qualifier?: string | undefined;
}

/** `{prefix}-{region}-{environmentType}[-{qualifier}]`, e.g. `circlek-eu-uat-dev`. */
export function tenantSlug(p: TenantSlugParts): string {
  return [p.prefix, p.region, p.environmentType, p.qualifier]
    .filter((x) => x !== undefined && x !== '')
    .join('-');
}

/** `{tenant}-{system}[-{qualifier}]`, e.g. `circlek-eu-prod-store-pl`. */
export function deploymentSlug(tenant: string, system: string, qualifier?: string): string {
  return [tenant, system, qualifier].filter((x) => x !== undefined && x !== '').join('-');
}

export interface TopicName {
  domain: string;
  subdomain: string;
  event: string;
  version: string;
  access: string;
}

/** `{scope-uuid}.{domain}.{subdomain}.{event}.{version}.{access}` exactly as seed 000. */
export function kafkaTopicName(scopeUuid: string, t: TopicName): string {
  return [scopeUuid.toLowerCase(), t.domain, t.subdomain, t.event, t.version, t.access].join('.');
}
