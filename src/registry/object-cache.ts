import { type Kysely, sql } from 'kysely';
import { LRUCache } from 'lru-cache';
import type { Scope } from '../db/database.js';
import type { Database } from '../db/schema.js';
import { KINDS, type Kind, TABLES } from './kinds/index.js';
import type { ApiObject } from './representation.js';

/** What the invalidation source must offer: the process's LISTEN connection (src/events/event-notifier.ts). */
export interface ObjectInvalidation {
  readonly listening: boolean;
  subscribe(channel: 'tenantry_objects', fn: (payload: string) => void): () => void;
  watch(fn: (listening: boolean) => void): () => void;
}

/** One object as a GET answers it: the body serialised once, and what authorisation and the ETag need. */
export interface ServedObject {
  readonly metadata: Readonly<Pick<ApiObject['metadata'], 'uuid' | 'generation' | 'tenant' | 'tenantUuid'>>;
  /** The response body (JSON). */
  readonly json: string;
}

export function servedObject(obj: ApiObject): ServedObject {
  const { uuid, generation, tenant, tenantUuid } = obj.metadata;
  return {
    metadata: Object.freeze({
      uuid,
      generation,
      ...(tenant !== undefined ? { tenant } : {}),
      ...(tenantUuid !== undefined ? { tenantUuid } : {}),
    }),
    json: JSON.stringify(obj),
  };
}

/** Invalidations remembered, to refuse a fill that raced with one (more: the fill is refused). */
const RECENT = 1024;
const EVERYTHING = '*';

/**
 * The objects this process read for GET (issue 24): the serialised answer of one statement
 * (`tenantry_read_object`) under one scope, so that a repeated GET costs no database round trip
 * and no serialisation. What stays with the request every time: authentication, the route's and
 * the object's Cedar decisions, tenant-spoofing checks and rate limits.
 *
 * Isolation is the database's, unchanged: an entry is keyed by the scope it was read under
 * (the platform, or one tenant, exactly what row-level security decided on) and is only ever
 * served to a request under the same scope; misses (404) are not kept, so they are decided by the
 * database every time.
 *
 * Correctness rests on invalidation, not on the time bound:
 * - Every update or delete of a registry row (desired state, status written by controllers and
 *   agents, lifecycle, tombstones) sends `NOTIFY tenantry_objects '<kind> <tenant> <id> <generation>'`
 *   at commit (migration 0057), whichever process made it; each one forgets that object's entries,
 *   under every scope and every name (UUID or slug). A bulk statement sends `*`: forget everything.
 * - Notifications can be missed only while LISTEN is not in place: the cache then answers and keeps
 *   nothing, and empties itself when it is in place again. Without a source (`attach` never
 *   called) it is off.
 * - The process's own mutations are forgotten once they committed, before the answer is sent:
 *   read-your-own-writes does not wait for the notification. The objects a request reports it
 *   changed (`forget`: the change path's writes on the routes that report them), or everything
 *   (`forgetAll`) after any other request that can change state (src/api/server.ts).
 * - A read that began before an invalidation of its object is not stored after it (it may hold the
 *   old row), so a read racing with a change cannot put the old answer back.
 * - Only kinds whose tables send the notification (`kinds`, looked up at start) are kept.
 * - Entries end after `ttlMs`; at most `maxEntries` are kept (least recently used out first).
 */
export class ObjectCache {
  /** GET answers, and (under `tenant-ref <ref>`) which tenant a tenant ref names as the platform sees it. */
  private readonly entries: LRUCache<string, ServedObject>;
  /** The keys under which each object (by UUID) is kept. */
  private readonly keysOf = new Map<string, Set<string>>();
  /** The last RECENT invalidations (object UUIDs or EVERYTHING); `seq` counts all of them. */
  private readonly recent: string[] = [];
  private seq = 0;
  private live = false;
  private detach: (() => void) | undefined;
  private kinds: ReadonlySet<Kind> = new Set();

  constructor(private readonly opts: { ttlMs: number; maxEntries: number }) {
    this.entries = new LRUCache<string, ServedObject>({
      max: Math.max(1, opts.maxEntries),
      ttl: Math.max(1, opts.ttlMs),
      dispose: (value, key) => {
        const keys = this.keysOf.get(value.metadata.uuid);
        keys?.delete(key);
        if (keys?.size === 0) this.keysOf.delete(value.metadata.uuid);
      },
    });
  }

  /** Turns the cache on for `kinds` while `source` listens (a TTL of 0 keeps it off). */
  attach(source: ObjectInvalidation, kinds: Iterable<Kind>): void {
    if (this.opts.ttlMs <= 0) return;
    this.detach?.();
    this.kinds = new Set(kinds);
    const unsubscribe = source.subscribe('tenantry_objects', (payload) => this.invalidate(payload));
    const unwatch = source.watch((listening) => {
      this.forgetAll();
      this.live = listening;
    });
    this.live = source.listening;
    this.detach = () => {
      unsubscribe();
      unwatch();
      this.live = false;
      this.forgetAll();
    };
  }

  close(): void {
    this.detach?.();
    this.detach = undefined;
  }

  /** Whether `kind` is kept now. */
  caches(kind: Kind): boolean {
    return this.live && this.kinds.has(kind);
  }

  get size(): number {
    return this.entries.size;
  }

  /** The key of one read: the scope it runs under, the kind, the name as asked, includeDeleted. */
  static key(scope: Scope, kind: Kind, ref: string, includeDeleted: boolean): string {
    return `${scope.kind === 'tenant' ? scope.tenantId.toLowerCase() : 'platform'} ${kind} ${ref} ${includeDeleted ? 1 : 0}`;
  }

  get(key: string): ServedObject | undefined {
    return this.live ? this.entries.get(key) : undefined;
  }

  /** The position to give `set` for a value read from now on. */
  begin(): number {
    return this.seq;
  }

  /** Keeps `value` under `key`, unless its object (or everything) was invalidated since `begin()`. */
  set(key: string, value: ServedObject, began: number): void {
    if (!this.live || this.invalidatedSince(began, value.metadata.uuid)) return;
    this.entries.set(key, value);
    const uuid = value.metadata.uuid;
    const keys = this.keysOf.get(uuid);
    if (keys) keys.add(key);
    else this.keysOf.set(uuid, new Set([key]));
  }

  /**
   * The tenant (UUID) that a tenant ref (slug or UUID) names as the platform sees it, for the
   * tenant-spoofing check (src/authz/tenant-spoofing.ts): kept and forgotten like that tenant's
   * object. Unknown names are not kept.
   */
  tenantOf(ref: string): string | undefined {
    return this.caches('Tenant') ? this.entries.get(`tenant-ref ${ref}`)?.metadata.uuid : undefined;
  }

  setTenantOf(ref: string, tenantId: string, began: number): void {
    if (this.caches('Tenant'))
      this.set(
        `tenant-ref ${ref}`,
        { metadata: Object.freeze({ uuid: tenantId, generation: 0 }), json: '' },
        began,
      );
  }

  private invalidatedSince(began: number, uuid: string): boolean {
    const missed = this.seq - began;
    if (missed === 0) return false;
    if (missed > this.recent.length) return true;
    for (let i = this.recent.length - missed; i < this.recent.length; i++) {
      const r = this.recent[i];
      if (r === uuid || r === EVERYTHING) return true;
    }
    return false;
  }

  private remember(what: string): void {
    this.seq++;
    this.recent.push(what);
    if (this.recent.length > RECENT) this.recent.splice(0, this.recent.length - RECENT);
  }

  /** A notification: `<kind> <tenant> <id> <generation>`, or `*`. Anything else forgets everything. */
  invalidate(payload: string): void {
    const id = payload.split(' ')[2];
    if (payload === EVERYTHING || !id) {
      this.forgetAll();
      return;
    }
    this.forget([id]);
  }

  /** Forgets these objects (UUIDs) under every scope and name, and every read of them under way. */
  forget(ids: Iterable<string>): void {
    for (const id of ids) {
      this.remember(id);
      const keys = this.keysOf.get(id);
      if (!keys) continue;
      for (const key of [...keys]) this.entries.delete(key);
      this.keysOf.delete(id);
    }
  }

  /** Forgets every object and every read under way. */
  forgetAll(): void {
    this.remember(EVERYTHING);
    this.entries.clear();
    this.keysOf.clear();
  }
}

/**
 * The kinds whose tables send `tenantry_objects` (both triggers of migration 0057): the only ones
 * the cache may keep. Read from the catalogue at start, so a kind added without them is never cached.
 */
export async function watchedKinds(db: Kysely<Database>): Promise<Kind[]> {
  const { rows } = await sql<{ table: string }>`
    select c.relname as table from pg_trigger t join pg_class c on c.oid = t.tgrelid
    where t.tgname in ('object_updated', 'object_deleted') and c.relnamespace = current_schema()::regnamespace
    group by c.relname having count(*) = 2`.execute(db);
  const tables = new Set(rows.map((r) => r.table));
  return KINDS.filter((k) => tables.has(TABLES[k]));
}
