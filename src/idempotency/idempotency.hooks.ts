import { createHash } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import type { ResourceRef } from '../authz/authorizer.js';
import { asPlatform, type Db, inScope, type Scope } from '../db/database.js';
import { problem, sendProblem } from '../http/problem.js';
import type { Security } from '../identity/security.js';
import {
  claimKey,
  completeKey,
  deleteExpiredKeys,
  type IdempotencyRecordKey,
  releaseKey,
  type StoredResponse,
} from './idempotency.repository.js';
import { redactSecrets } from './redact-response.js';

const IDEMPOTENCY_KEY = /^[A-Za-z0-9._:-]{1,200}$/;
/** How long a response is kept for replay. */
export const IDEMPOTENCY_TTL_SECONDS = 24 * 60 * 60;
const SWEEP_EVERY = 100;

interface Pending {
  key: IdempotencyRecordKey;
  scope: Scope;
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
    const claim = await inScope(db, ctx.scope, (trx) => claimKey(trx, key, hash, IDEMPOTENCY_TTL_SECONDS));
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
    if (++claims % SWEEP_EVERY === 0) await asPlatform(db, (trx) => deleteExpiredKeys(trx));
  });

  app.addHook('onSend', async (request, reply, payload) => {
    const pending = request.idempotency;
    if (!pending) return payload;
    request.idempotency = undefined;
    if (reply.statusCode >= 500) {
      await inScope(db, pending.scope, (trx) => releaseKey(trx, pending.key));
      return payload;
    }
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
    const stored: Stored = {
      statusCode: reply.statusCode,
      headers,
      body: safe.value,
      ...(safe.redacted ? { redacted: true } : {}),
      decisions: (request.ctx?.decisions ?? []) as Stored['decisions'],
    };
    await inScope(db, pending.scope, (trx) => completeKey(trx, pending.key, stored));
    return payload;
  });
}

declare module 'fastify' {
  interface FastifyRequest {
    idempotency?: Pending | undefined;
  }
}
