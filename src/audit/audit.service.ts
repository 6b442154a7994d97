import { createPublicKey, type KeyObject } from 'node:crypto';
import fs from 'node:fs/promises';
import type { Writable } from 'node:stream';
import { sql } from 'kysely';
import type { RequestContext } from '../context/request-context.js';
import { type Db, inScope } from '../db/database.js';
import { isUuid } from '../domain/identifiers.js';
import { ForbiddenError, NotFoundError } from '../errors/errors.js';
import { type AuditCheckpoint, createAuditCheckpoint } from './audit-checkpoint.js';
import { PLATFORM_CHAIN } from './audit-hash.js';
import { integrateAudit } from './audit-sequencer.js';
import {
  type ConsistencyProof,
  chainCheckpoint,
  chainConsistency,
  type InclusionProof,
  locateRecord,
  recordInclusion,
  type SignedTreeHead,
} from './audit-tree.js';
import type { AuditVerification } from './audit-verifier.js';
import type { AuditSigner } from './checkpoint-signer.js';
import {
  type AuditExportSummary,
  checkExportOptions,
  type ExportAuditOptions,
  exportAudit,
} from './export-audit.js';
import { type AuditPage, type AuditSearchQuery, searchAudit } from './search-audit.js';
import { verifyAudit } from './verify-audit.js';
import { type CosignedTreeHead, cosignedCheckpoint } from './witness-cosigning.js';

/** Reads the extra trusted checkpoint keys (PEM files, e.g. the public keys of rotated-out signers). */
export async function readTrustedKeys(files: readonly string[]): Promise<KeyObject[]> {
  return Promise.all(files.map(async (f) => createPublicKey(await fs.readFile(f, 'utf8'))));
}

/**
 * The audit log as the API and CLI see it: search, verify, export, the public key. A tenant-scoped
 * caller sees its own chain only: naming another tenant is refused, never silently narrowed.
 */
export class AuditService {
  constructor(
    private readonly db: Db,
    private readonly signer: AuditSigner,
    private readonly extraKeys: readonly KeyObject[] = [],
  ) {}

  /** The keys verification trusts: the current signer's and the configured older ones. */
  get publicKeys(): KeyObject[] {
    return [this.signer.publicKey, ...this.extraKeys];
  }

  publicKey(): { keyId: string; algorithm: 'Ed25519'; pem: string } {
    return { keyId: this.signer.keyId, algorithm: 'Ed25519', pem: this.signer.publicKeyPem };
  }

  async search(ctx: RequestContext, query: AuditSearchQuery): Promise<AuditPage> {
    const tenant = await this.chainOf(ctx, query.tenant);
    return searchAudit(this.db, ctx.scope, { ...query, ...(tenant !== undefined ? { tenant } : {}) });
  }

  async verify(ctx: RequestContext, tenantRef?: string): Promise<AuditVerification> {
    const tenant = await this.chainOf(ctx, tenantRef);
    return verifyAudit(this.db, {
      publicKeys: this.publicKeys,
      ...(tenant !== undefined ? { tenant } : {}),
    });
  }

  /**
   * Checks an export request and returns the export to run, so that a refusal (4xx) comes before
   * the first byte is streamed.
   */
  async prepareExport(
    ctx: RequestContext,
    opts: ExportAuditOptions,
  ): Promise<(out: Writable) => Promise<AuditExportSummary>> {
    const tenant = await this.chainOf(ctx, opts.tenant);
    const checked = { ...opts, ...(tenant !== undefined ? { tenant } : {}) };
    checkExportOptions(checked);
    return async (out) => {
      await this.catchUp();
      return exportAudit(this.db, out, { ...checked, signer: this.signer });
    };
  }

  /**
   * Integrates what has committed before answering with the tree (read your writes): the sequencer
   * would within a second anyway. If another process is sequencing, waits for it up to a second.
   */
  private async catchUp(): Promise<void> {
    for (let i = 0; i < 20; i++) {
      if ((await integrateAudit(this.db)) !== null) return;
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Signs a checkpoint of every chain head now (the checkpointer also does this periodically). */
  async checkpoint(ctx: RequestContext): Promise<AuditCheckpoint> {
    this.platformOnly(ctx);
    await this.catchUp();
    return createAuditCheckpoint(this.db, this.signer);
  }

  /** The signed checkpoint (C2SP note) of the caller's chain's log, or of the chain named. */
  async treeHead(ctx: RequestContext, tenantRef?: string): Promise<SignedTreeHead> {
    const chain = (await this.chainOf(ctx, tenantRef)) ?? PLATFORM_CHAIN;
    await this.catchUp();
    return chainCheckpoint(this.db, this.signer, chain);
  }

  /** The largest witness-cosigned checkpoint of the caller's chain's log, or of the chain named (null: none yet). */
  async cosignedTreeHead(
    ctx: RequestContext,
    tenantRef?: string,
  ): Promise<{ chain: string; cosigned: Omit<CosignedTreeHead, 'chain'> | null }> {
    const chain = (await this.chainOf(ctx, tenantRef)) ?? PLATFORM_CHAIN;
    const head = await cosignedCheckpoint(this.db, this.signer, chain);
    if (!head) return { chain, cosigned: null };
    const { chain: _, ...cosigned } = head;
    return { chain, cosigned };
  }

  /** The inclusion proof of one record in its chain's log; a tenant may ask only about its own. */
  async inclusion(ctx: RequestContext, recordId: string): Promise<InclusionProof> {
    await this.catchUp();
    const at = await locateRecord(this.db, recordId);
    const own = ctx.scope.kind === 'tenant' ? ctx.scope.tenantId : undefined;
    if (own !== undefined && at.chain !== own)
      throw new NotFoundError('audit.record_not_found', `Audit record ${recordId} does not exist.`);
    return recordInclusion(this.db, this.signer, recordId.toLowerCase(), at);
  }

  async consistency(
    ctx: RequestContext,
    q: { tenant?: string; from: number; to?: number },
  ): Promise<ConsistencyProof> {
    const chain = (await this.chainOf(ctx, q.tenant)) ?? PLATFORM_CHAIN;
    await this.catchUp();
    return chainConsistency(this.db, this.signer, chain, q.from, q.to);
  }

  private platformOnly(ctx: RequestContext): void {
    if (ctx.scope.kind !== 'platform')
      throw new ForbiddenError('audit.platform_only', 'Only the platform can sign audit checkpoints.');
  }

  /**
   * The chain a request names: a tenant UUID or slug (a deleted tenant's too), or 'platform'. A
   * tenant-scoped caller gets its own chain by default and may name no other.
   */
  private async chainOf(ctx: RequestContext, ref: string | undefined): Promise<string | undefined> {
    const own = ctx.scope.kind === 'tenant' ? ctx.scope.tenantId : undefined;
    if (ref === undefined) return own;
    let chain = ref;
    if (ref !== PLATFORM_CHAIN && !isUuid(ref)) {
      const { rows } = await inScope(this.db, ctx.scope, (trx) =>
        sql<{ id: string }>`select id from tenants where slug = ${ref}
          order by deleted_at desc nulls first limit 1`.execute(trx),
      );
      if (!rows[0]) throw new NotFoundError('tenant.not_found', `Tenant "${ref}" does not exist.`);
      chain = rows[0].id;
    }
    chain = chain.toLowerCase();
    if (own !== undefined && chain !== own)
      throw new ForbiddenError('tenant.spoofing', 'The request names another tenant than the caller’s.');
    return chain;
  }
}
