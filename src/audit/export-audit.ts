import type { KeyObject } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import readline from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import { type Db, platformDb, setScope, type Trx } from '../db/database.js';
import { FieldErrors, ValidationError } from '../errors/errors.js';
import { loadHeads, loadLeafRows, loadRetention, loadWindows, streamRecords } from './audit.repository.js';
import { type AuditCheckpoint, loadCheckpoints } from './audit-checkpoint.js';
import type { AuditRecord } from './audit-hash.js';
import {
  type AuditVerification,
  AuditVerifier,
  type AuditWindow,
  type RetentionMark,
} from './audit-verifier.js';
import { signCheckpoint } from './checkpoint-note.js';
import { type AuditSigner, trustedKeys } from './checkpoint-signer.js';
import { logOrigin } from './log-origin.js';
import { allInclusionProofs, type Hash, leafHash, rootOf } from './merkle.js';
import { parseChainFilter } from './verify-audit.js';

/**
 * Export format `tenantry.audit.v1`, JSON Lines, in this order:
 *   {"type":"header","format":"tenantry.audit.v1","exportedAt":…,"chain":null|"<tenant id>"|"platform"}
 *   {"type":"checkpoint", …AuditCheckpoint}          every checkpoint, oldest first
 *   {"type":"retention", …RetentionMark}             segments deleted by retention
 *   {"type":"head","chain":…,"seq":…,"hash":…}       the stored chain heads
 *   {"type":"record", …AuditRecord}                  each chain in seq order
 * An export limited in time (`since`/`until`) has, instead of retention and head lines, one
 *   {"type":"window","chain":…,"fromSeq":…,"toSeq":…,"prevHash":…}
 * per chain with records in the window; the records are that contiguous range of the chain, and the
 * checkpoints that signed a head inside it anchor it.
 * An export of one chain (a tenant's, or the platform's) holds nothing about any other chain: no
 * checkpoint lines (those sign every chain's head) but, when it has a signer and the chain is
 * whole (no retention), its log's signed tree head
 *   {"type":"tree_head","chain":…,"origin":…,"size":…,"rootHash":…,"checkpoint":"<C2SP note>"}
 * and on each record line `inclusionProof`: its RFC 9162 inclusion proof (hex) at leaf seq - 1 in
 * that tree.
 * A record line is exactly the hashed document (format v1) plus `type` and `hash`, so anyone can
 * recompute it: sha256 over the canonical JSON (sorted keys, no spaces) of the line without `type`
 * and `hash`. A checkpoint signs the canonical JSON of {v:1,type:"tenantry.audit.checkpoint",id,
 * time,keyId,heads} with Ed25519.
 */
export const EXPORT_FORMAT = 'tenantry.audit.v1';

export interface ExportAuditOptions {
  /** A tenant id, or 'platform': that chain only, with its own tree head and inclusion proofs. */
  tenant?: string;
  /** Signs the chain's tree head in a one-chain export (without it, the export has none). */
  signer?: AuditSigner;
  /** Records written at or after this time (ISO 8601). */
  since?: string;
  /** Records written before this time (ISO 8601). */
  until?: string;
  batchSize?: number;
}

export interface AuditExportSummary {
  records: number;
  /** Checkpoint lines: the all-chains checkpoints, or in a one-chain export its tree head (0 or 1). */
  checkpoints: number;
  retention: number;
  chains: number;
}

async function writeLine(out: Writable, value: unknown): Promise<void> {
  if (!out.write(`${JSON.stringify(value)}\n`)) await once(out, 'drain');
}

function timeOption(value: string | undefined, field: string, errors: FieldErrors): string | undefined {
  if (value === undefined) return undefined;
  const d = new Date(value);
  if (!/^\d{4}-\d{2}-\d{2}/.test(value) || Number.isNaN(d.getTime())) {
    errors.add(`/${field}`, 'time.invalid', `"${value}" is not an ISO 8601 time`);
    return undefined;
  }
  return d.toISOString();
}

/** Checks the options (a 400 with pointers when wrong), so a caller can refuse before streaming. */
export function checkExportOptions(opts: ExportAuditOptions): {
  chain: string | undefined;
  since: string | undefined;
  until: string | undefined;
} {
  const chain = parseChainFilter(opts.tenant);
  const errors = new FieldErrors();
  const since = timeOption(opts.since, 'since', errors);
  const until = timeOption(opts.until, 'until', errors);
  if (!errors.empty)
    throw new ValidationError('audit.query_invalid', 'The export window is invalid.', errors.list, 400);
  return { chain, since, until };
}

/** The leaf hashes of a chain in the snapshot (pruned ones included), or undefined when incomplete. */
async function chainTree(trx: Trx, chain: string): Promise<Hash[] | undefined> {
  const rows = await loadLeafRows(trx, chain);
  if (rows.length > 0 && rows[rows.length - 1]!.seq !== rows.length) return undefined;
  return rows.map((r) => leafHash(Buffer.from(r.hash, 'hex')));
}

/** Writes one consistent snapshot of the audit log to `out` as JSON Lines; does not end `out`. */
export async function exportAudit(
  db: Db,
  out: Writable,
  opts: ExportAuditOptions = {},
): Promise<AuditExportSummary> {
  const { chain, since, until } = checkExportOptions(opts);
  const windowed = since !== undefined || until !== undefined;
  return platformDb(db)
    .transaction()
    .setIsolationLevel('repeatable read')
    .setAccessMode('read only')
    .execute(async (trx) => {
      await setScope(trx, { kind: 'platform' }, db);
      const summary: AuditExportSummary = { records: 0, checkpoints: 0, retention: 0, chains: 0 };
      await writeLine(out, {
        type: 'header',
        format: EXPORT_FORMAT,
        exportedAt: new Date().toISOString(),
        chain: chain ?? null,
        ...(windowed ? { since: since ?? null, until: until ?? null } : {}),
      });
      let proofs: Hash[][] | undefined;
      if (chain === undefined) {
        for (const c of await loadCheckpoints(trx)) {
          await writeLine(out, { type: 'checkpoint', ...c });
          summary.checkpoints++;
        }
      } else if (opts.signer) {
        const tree = await chainTree(trx, chain);
        if (tree) {
          const root = rootOf(tree);
          const origin = logOrigin(chain);
          await writeLine(out, {
            type: 'tree_head',
            chain,
            origin,
            size: tree.length,
            rootHash: root.toString('hex'),
            checkpoint: signCheckpoint(opts.signer, { origin, size: tree.length, root }),
          });
          summary.checkpoints++;
          proofs = allInclusionProofs(tree);
        }
      }
      const withProof = (r: AuditRecord) => {
        const proof = proofs?.[r.seq - 1];
        return proof
          ? { type: 'record', ...r, inclusionProof: proof.map((h) => h.toString('hex')) }
          : { type: 'record', ...r };
      };
      const writeRecords = async (range: { chain?: string; fromSeq?: number; toSeq?: number }) => {
        for await (const batch of streamRecords(trx, {
          ...range,
          ...(opts.batchSize ? { batchSize: opts.batchSize } : {}),
        })) {
          const text = batch.map((r) => `${JSON.stringify(withProof(r))}\n`).join('');
          if (!out.write(text)) await once(out, 'drain');
          summary.records += batch.length;
        }
      };
      if (windowed) {
        const windows = await loadWindows(trx, {
          ...(chain !== undefined ? { chain } : {}),
          ...(since !== undefined ? { since } : {}),
          ...(until !== undefined ? { until } : {}),
        });
        for (const w of windows) await writeLine(out, { type: 'window', ...w });
        summary.chains = windows.length;
        for (const w of windows) await writeRecords(w);
        return summary;
      }
      for (const m of await loadRetention(trx, chain)) {
        await writeLine(out, { type: 'retention', ...m });
        summary.retention++;
      }
      for (const h of await loadHeads(trx, chain)) {
        await writeLine(out, { type: 'head', ...h });
        summary.chains++;
      }
      await writeRecords(chain !== undefined ? { chain } : {});
      return summary;
    });
}

export interface OfflineVerification extends AuditVerification {
  /** Lines that are not part of the format, or out of order. */
  malformed: { line: number; message: string }[];
}

/**
 * Verifies an exported file with nothing but the file and the public key(s): every hash, link and
 * seq, every checkpoint signature, that the checkpointed heads are present, and retention.
 * `input` is a path or a readable stream.
 */
export async function verifyAuditExport(
  input: string | Readable,
  publicKeys: ReadonlyArray<KeyObject | string>,
): Promise<OfflineVerification> {
  const stream = typeof input === 'string' ? fs.createReadStream(input, 'utf8') : input;
  const lines = readline.createInterface({ input: stream, crlfDelay: Number.POSITIVE_INFINITY });
  const malformed: { line: number; message: string }[] = [];
  let verifier: AuditVerifier | undefined;
  const keys = trustedKeys(publicKeys);
  let n = 0;
  let seenRecords = false;
  for await (const text of lines) {
    n++;
    if (text.trim() === '') continue;
    let value: { type?: unknown; [k: string]: unknown };
    try {
      value = JSON.parse(text);
    } catch {
      malformed.push({ line: n, message: 'not JSON' });
      continue;
    }
    if (n === 1) {
      if (value.type !== 'header' || value.format !== EXPORT_FORMAT) {
        malformed.push({ line: n, message: `not a ${EXPORT_FORMAT} export` });
        break;
      }
      const chain = typeof value.chain === 'string' ? value.chain : undefined;
      verifier = new AuditVerifier(keys, chain !== undefined ? { chain } : {});
      continue;
    }
    if (!verifier) break;
    const { type, ...rest } = value;
    switch (type) {
      case 'checkpoint':
      case 'retention':
      case 'window':
        if (seenRecords) {
          malformed.push({ line: n, message: `${type} after the records` });
          continue;
        }
        if (type === 'checkpoint') verifier.addCheckpoint(rest as unknown as AuditCheckpoint);
        else if (type === 'retention') verifier.addRetention(rest as unknown as RetentionMark);
        else verifier.addWindow(rest as unknown as AuditWindow);
        break;
      case 'head':
        verifier.addHead(String(rest.chain), Number(rest.seq), String(rest.hash));
        break;
      case 'tree_head':
        if (seenRecords) {
          malformed.push({ line: n, message: 'tree_head after the records' });
          continue;
        }
        verifier.addTreeHead(String(rest.chain), String(rest.checkpoint), [...keys.values()]);
        break;
      case 'record':
        seenRecords = true;
        try {
          verifier.addRecord(rest as unknown as AuditRecord);
        } catch {
          malformed.push({ line: n, message: 'not an audit record' });
        }
        break;
      default:
        malformed.push({ line: n, message: `unknown line type ${JSON.stringify(type)}` });
    }
  }
  if (!verifier) {
    if (malformed.length === 0) malformed.push({ line: 1, message: 'empty file' });
    return {
      ok: false,
      records: 0,
      chains: [],
      checkpoints: { total: 0, valid: 0, latest: null },
      problems: [],
      unsequenced: { records: 0, oldest: null },
      malformed,
    };
  }
  const result = verifier.finish();
  return { ...result, ok: result.ok && malformed.length === 0, malformed };
}
