import { createHash } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ResourceRef } from '../authz/authorizer.js';
import { asPlatform, type Db, inScope, type Scope } from '../db/database.js';
import { DATABASE_RETRY_AFTER_SECONDS, problem, sendProblem } from '../http/problem.js';
import type { Security } from '../identity/security.js';
import {
  claimKey,
  completeKey,
  deleteExpiredKeys,
  type IdempotencyRecordKey,
  lookupKey,
  releaseKey,
  type StoredResponse,
  saveAnswer,
} from './idempotency.repository.js';
import { IdempotentWrite } from './idempotent-write.js';
import { redactSecrets } from './redact-response.js';

const IDEMPOTENCY_KEY = /^[A-Za-z0-9._:-]{1,200}$/;
/** How long a response is kept for replay. */
export const IDEMPOTENCY_TTL_SECONDS = 24 * 60 * 60;
const SWEEP_EVERY = 100;

interface Pending {
  key: IdempotencyRecordKey;
  scope: Scope;
  /** On a route whose write saves its answer in its own transaction (route config `idempotency: 'atomic'`). */
  write?: IdempotentWrite;
}

/** What a replay decides again: the decisions the first request was allowed. */
type Stored = StoredResponse & { decisions?: { action: string; resource: ResourceRef }[] };

/**
 * Idempotency-Key on POST: the first response is stored (a redacted copy: no one-time secret) and
 * replayed; another body under the same key is refused.
 * - The record belongs to the whole caller: issuer, subject, application and tenant scope, with the
 *   method and path; it is read and written in the caller's row-level-security scope.
 * - Runs after authentication, tenant-spoofing and the route's decision (security preHandler). A
 *   replay also decides again every decision the first request was allowed (per object), for the
 *   caller that replays: a caller whose rights were taken away gets 403, not the old response.
 * - On routes marked `idempotency: 'atomic'` (the registry's writes) nothing is claimed up front: the
 *   record is written in the write's own transaction with its answer (idempotent-write.ts), so the
 *   write applies exactly once across a database outage. Elsewhere a pending record is claimed
 *   first and completed after the handler (a failure between the two can leave it pending).
 */
export function registerIdempotency(app: FastifyInstance, db: Db, security: Security): void {
  // Expired records of every caller are swept now and then (one claim in SWEEP_EVERY), in bounded batches.
  let claims = 0;
  app.addHook('preHandler', async (request, reply) => {
    const header = request.headers['idempotency-key'];
    if (request.method !== 'POST' || header === undefined) return;
    if (typeof header !== 'string' || !IDEMPOTENCY_KEY.test(header)) {
      return sendProblem(
        reply,
        problem(
          400,
          'header.idempotency_key',
          'Idempotency-Key must be 1-200 characters of letters, digits and ._:-',
          [],
          { instance: request.id },
        ),
      );
    }
    const ctx = request.ctx;
    if (!ctx) return;
    const key: IdempotencyRecordKey = {
      issuer: ctx.issuer ?? '',
      principal: ctx.actor.principal,
      appId: ctx.appId ?? '',
      tenantId: ctx.scope.kind === 'tenant' ? ctx.scope.tenantId : null,
      method: request.method,
      path: request.url,
      key: header,
    };
    const body = typeof request.body === 'string' ? request.body : JSON.stringify(request.body ?? null);
    const hash = createHash('sha256').update(body).digest('hex');
    const atomic = request.routeOptions.config.idempotency === 'atomic';
    const claim = atomic
      ? ((await inScope(db, ctx.scope, (trx) => lookupKey(trx, key, hash))) ?? { kind: 'claimed' as const })
      : await inScope(db, ctx.scope, (trx) => claimKey(trx, key, hash, IDEMPOTENCY_TTL_SECONDS));
    if (claim.kind === 'mismatch') {
      return sendProblem(
        reply,
        problem(
          422,
          'idempotency.key_reused',
          'This Idempotency-Key was used with a different request.',
          [],
          { instance: request.id },
        ),
      );
    }
    if (claim.kind === 'in_progress') {
      return sendProblem(
        reply,
        problem(
          409,
          'idempotency.in_progress',
          'A request with this Idempotency-Key is still being processed.',
          [],
          { instance: request.id },
        ),
      );
    }
    if (claim.kind === 'replay') {
      const stored = claim.response as Stored;
      // Decided again for this caller now; AccessDenied becomes an audited 403.
      for (const d of stored.decisions ?? []) security.authorizer.authorize(ctx, d.action, d.resource);
      for (const [h, v] of Object.entries(stored.headers)) reply.header(h, v);
      reply.header('idempotency-replayed', 'true');
      if (stored.redacted) reply.header('idempotency-redacted', 'true');
      return reply.code(stored.statusCode).send(stored.body);
    }
    ctx.decisions = [];
    request.idempotency = { key, scope: ctx.scope };
    if (atomic) {
      const write = new IdempotentWrite(key, hash, IDEMPOTENCY_TTL_SECONDS);
      ctx.idempotency = write;
      request.idempotency.write = write;
      request.idempotentWrite = write;
    }
    if (++claims % SWEEP_EVERY === 0) await asPlatform(db, (trx) => deleteExpiredKeys(trx));
  });

  app.addHook('onSend', async (request, reply, payload) => {
    const pending = request.idempotency;
    if (!pending) return payload;
    request.idempotency = undefined;
    const write = pending.write;
    if (write?.open && reply.statusCode >= 400) await write.rollback();
    if (reply.statusCode >= 500) {
      if (!write) await inScope(db, pending.scope, (trx) => releaseKey(trx, pending.key));
      return payload;
    }
    const stored = storedAnswer(request, reply, payload);
    if (write?.open) {
      try {
        await write.commit(stored);
      } catch (err) {
        // Committed or not, the retry with the key finds out: it replays this answer or runs the write.
        request.log.warn({ err: (err as Error).message }, 'idempotent write: commit failed');
        for (const h of ['etag', 'location', 'link', 'tenantry-workflow']) reply.removeHeader(h);
        reply
          .code(503)
          .header('retry-after', String(DATABASE_RETRY_AFTER_SECONDS))
          .type('application/problem+json');
        return JSON.stringify(
          problem(503, 'database.unavailable', 'The database is unavailable; retry shortly.', [], {
            instance: request.id,
          }),
        );
      }
      return payload;
    }
    if (write) {
      await inScope(db, pending.scope, (trx) =>
        saveAnswer(trx, pending.key, write.hash, IDEMPOTENCY_TTL_SECONDS, stored),
      );
      return payload;
    }
    await inScope(db, pending.scope, (trx) => completeKey(trx, pending.key, stored));
    return payload;
  });

  // A request that ends without onSend (its connection aborted) leaves no transaction open.
  app.addHook('onResponse', async (request) => {
    const write = request.idempotentWrite;
    if (write?.open) await write.rollback();
  });
}

/** The answer as kept for replay: status, a few headers, the redacted body, the decisions taken. */
function storedAnswer(request: FastifyRequest, reply: FastifyReply, payload: unknown): Stored {
  const headers: Record<string, string> = {};
  for (const h of ['content-type', 'etag', 'location']) {
    const v = reply.getHeader(h);
    if (v !== undefined) headers[h] = String(v);
  }
  const text =
    typeof payload === 'string' ? payload : Buffer.isBuffer(payload) ? payload.toString('utf8') : '';
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // keep the text
  }
  const safe = redactSecrets(body);
  return {
    statusCode: reply.statusCode,
    headers,
    body: safe.value,
    ...(safe.redacted ? { redacted: true } : {}),
    decisions: (request.ctx?.decisions ?? []) as Stored['decisions'],
  };
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The route's write saves the Idempotency-Key answer in its own transaction (IdempotentWrite). */
    idempotency?: 'atomic';
  }
  interface FastifyRequest {
    idempotency?: Pending | undefined;
    idempotentWrite?: IdempotentWrite | undefined;
  }
}
