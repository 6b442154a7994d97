import type { Config } from '../config/config.js';
import type { RequestContext } from '../context/request-context.js';
import { type Db, inScope } from '../db/database.js';
import { isUuid } from '../domain/identifiers.js';
import { NotFoundError, ValidationError } from '../errors/errors.js';
import { findById, findBySlug } from '../registry/object.repository.js';
import { padSequence, type TenantryCloudEvent, toCloudEvent } from './cloud-event.js';
import type { EventNotifier } from './event-notifier.js';
import { decodeGlobalCursor, encodeGlobalCursor, readAll, readStream, readTail } from './read-events.js';

/** Which log a reader follows: one stream (a tenant or the platform), or all it may see. */
export type EventSelector = { stream: string } | { stream: null };

export interface EventPage {
  /** Each event with its own cursor (the SSE `id:`). */
  entries: { cursor: string; event: TenantryCloudEvent }[];
  /** Where to resume: the last event's cursor (a zero-padded sequence, or a global `g…` cursor). */
  cursor: string | null;
}

/** The event log: replay from any position, and wake-ups for live readers. */
export class EventsService {
  constructor(
    private readonly db: Db,
    private readonly config: Config,
    readonly notifier?: EventNotifier,
  ) {}

  /**
   * `tenant` is a slug, a UUID or `platform`. Absent: a tenant caller reads its own stream, a platform
   * caller every stream (global cursor).
   */
  async selector(ctx: RequestContext, tenant: string | undefined): Promise<EventSelector> {
    if (tenant === undefined)
      return ctx.scope.kind === 'tenant' ? { stream: ctx.scope.tenantId } : { stream: null };
    if (tenant === 'platform') {
      if (ctx.scope.kind === 'tenant')
        throw new NotFoundError('tenant.not_found', 'The platform stream is not visible to a tenant.', {});
      return { stream: 'platform' };
    }
    const row = await inScope(this.db, ctx.scope, (trx) =>
      isUuid(tenant)
        ? findById(trx, 'Tenant', tenant.toLowerCase(), { includeDeleted: true })
        : findBySlug(trx, 'Tenant', tenant),
    );
    if (!row)
      throw new NotFoundError('tenant.not_found', `Tenant "${tenant}" does not exist.`, { ref: tenant });
    return { stream: row.id };
  }

  /** Events after `after` (exclusive), oldest first. */
  async read(
    ctx: RequestContext,
    sel: EventSelector,
    after: string | undefined,
    limit: number,
  ): Promise<EventPage> {
    return inScope(this.db, ctx.scope, async (trx) => {
      if (sel.stream !== null) {
        const from = after === undefined ? 0 : parseSequence(after);
        const rows = await readStream(trx, sel.stream, from, limit);
        const last = rows.at(-1);
        return {
          entries: rows.map((r) => ({
            cursor: padSequence(r.seq),
            event: toCloudEvent(r, this.config.source),
          })),
          cursor: last ? padSequence(last.seq) : after === undefined ? null : padSequence(from),
        };
      }
      const cursor = after === undefined ? null : decodeGlobalCursor(after);
      if (after !== undefined && !cursor)
        throw badCursor('a global cursor (g<txid>-<position>) from this API');
      const rows = await readAll(trx, cursor ?? null, limit);
      const last = rows.at(-1);
      return {
        entries: rows.map((r) => ({
          cursor: encodeGlobalCursor(r),
          event: toCloudEvent(r, this.config.source),
        })),
        cursor: last ? encodeGlobalCursor(last) : (after ?? null),
      };
    });
  }

  /** The newest `limit` events, oldest first, and the cursor a live reader resumes after. */
  async tail(ctx: RequestContext, sel: EventSelector, limit: number): Promise<EventPage> {
    return inScope(this.db, ctx.scope, async (trx) => {
      const rows = (await readTail(trx, sel.stream, limit)).reverse();
      const cursorOf = (r: (typeof rows)[number]) =>
        sel.stream === null ? encodeGlobalCursor(r) : padSequence(r.seq);
      const last = rows.at(-1);
      return {
        entries: rows.map((r) => ({ cursor: cursorOf(r), event: toCloudEvent(r, this.config.source) })),
        cursor: last ? cursorOf(last) : sel.stream === null ? null : padSequence(0),
      };
    });
  }
}

function badCursor(expected: string): ValidationError {
  return new ValidationError(
    'events.cursor_invalid',
    `The position is not ${expected}.`,
    [{ pointer: '/after', code: 'events.cursor_invalid', message: `must be ${expected}` }],
    400,
  );
}

function parseSequence(text: string): number {
  if (!/^\d{1,20}$/.test(text)) throw badCursor('a sequence number');
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw badCursor('a sequence number');
  return n;
}
