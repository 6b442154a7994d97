import { createPublicKey } from 'node:crypto';
import fs from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream } from 'node:stream/web';
import type { Command } from 'commander';
import type { ConsistencyProof, SignedTreeHead } from '../audit/audit-tree.js';
import type { AuditVerification } from '../audit/audit-verifier.js';
import { verifyAuditExport } from '../audit/export-audit.js';
import { checkAgainstSavedCheckpoint } from '../audit/witness.js';
import type { TenantryClient } from './client.js';
import { isTable, type OutputFormat, renderList, table } from './output.js';

interface AuditDeps {
  client: () => TenantryClient;
  output: () => OutputFormat;
  run: (action: () => Promise<void>) => Promise<void>;
}

interface AuditRecordView {
  time: string;
  action: string;
  outcome: string;
  actor: { principal: string };
  target: { kind: string; slug: string | null; id: string | null };
  correlationId: string;
}

function query(params: Record<string, string | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined) q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
}

/** Prints a verification; returns whether it passed. */
function report(
  v: AuditVerification & { malformed?: { line: number; message: string }[] },
  format: OutputFormat,
) {
  if (!isTable(format)) {
    console.log(JSON.stringify(v, null, 2));
    return v.ok;
  }
  const cp = v.checkpoints;
  if (v.ok) {
    console.log(
      `audit verified: ${v.records} records in ${v.chains.length} chains; ` +
        `${cp.valid}/${cp.total} checkpoints valid${cp.latest ? ` (latest ${cp.latest})` : ''}`,
    );
    const unanchored = v.chains.filter((c) => c.lastSeq !== null && (c.anchoredThrough ?? 0) < c.lastSeq);
    if (unanchored.length > 0)
      console.log(`  ${unanchored.length} chains have records newer than the latest checkpoint`);
    // An offline file has none; the API reports what the sequencer has not integrated yet.
    if (v.unsequenced?.records)
      console.log(
        `  ${v.unsequenced.records} records not yet sequenced into their chain (oldest ${v.unsequenced.oldest}); not verified`,
      );
    return true;
  }
  console.log(`audit verification FAILED: ${v.firstProblem?.message ?? 'see the problems below'}`);
  for (const p of v.problems.slice(0, 20))
    console.log(
      `  [${p.code}] chain ${p.chain ?? '-'}${p.seq !== undefined ? ` seq ${p.seq}` : ''}` +
        `${p.recordId ? ` record ${p.recordId}` : ''}${p.checkpointId ? ` checkpoint ${p.checkpointId}` : ''}: ${p.message}`,
    );
  if (v.problems.length > 20) console.log(`  … and ${v.problems.length - 20} more`);
  for (const m of v.malformed ?? []) console.log(`  line ${m.line}: ${m.message}`);
  return false;
}

export function registerAuditCommands(program: Command, deps: AuditDeps): void {
  const audit = program.command('audit').description('the tamper-evident audit log');

  audit
    .command('verify')
    .description('recompute the hash chains and check the signed checkpoints; exits 1 on tampering')
    .option('--tenant <tenant>', 'one tenant (UUID or slug), or "platform"')
    .option('--file <export.jsonl>', 'verify an exported file offline instead of the server')
    .option(
      '--checkpoint <note>',
      "prove the log consistent with a checkpoint saved earlier (`tenantry audit tree-head`'s output)",
    )
    .option(
      '--public-key <pem>',
      'with --file or --checkpoint: the trusted Ed25519 public key (PEM file); repeatable',
      collect,
      [],
    )
    .action((opts: { tenant?: string; file?: string; checkpoint?: string; publicKey: string[] }) =>
      deps.run(async () => {
        if (opts.checkpoint) {
          const client = deps.client();
          const keys =
            opts.publicKey.length > 0
              ? opts.publicKey.map((f) => createPublicKey(fs.readFileSync(f, 'utf8')))
              : [
                  createPublicKey(
                    (await client.request<{ pem: string }>('GET', '/v1/audit/public-key')).body.pem,
                  ),
                ];
          const check = await checkAgainstSavedCheckpoint(
            fs.readFileSync(opts.checkpoint, 'utf8'),
            keys,
            async (chain, from) =>
              (
                await client.request<ConsistencyProof>(
                  'GET',
                  `/v1/audit/consistency${query({ tenant: chain, from: String(from) })}`,
                )
              ).body,
          );
          const whole = check.ok
            ? (
                await client.request<AuditVerification>(
                  'GET',
                  `/v1/audit/verify${query({ tenant: check.chain ?? undefined })}`,
                )
              ).body
            : undefined;
          if (deps.output() !== 'table')
            console.log(JSON.stringify({ ...check, verification: whole }, null, 2));
          else console.log(`${check.ok ? 'consistent' : 'INCONSISTENT'}: ${check.message}`);
          if (whole && deps.output() === 'table') report(whole, 'table');
          if (!check.ok || (whole && !whole.ok)) process.exitCode = 1;
          return;
        }
        let result: AuditVerification & { malformed?: { line: number; message: string }[] };
        if (opts.file) {
          if (opts.publicKey.length === 0)
            throw new Error('--file needs --public-key (get it with `tenantry audit public-key`)');
          result = await verifyAuditExport(
            opts.file,
            opts.publicKey.map((f) => fs.readFileSync(f, 'utf8')),
          );
        } else {
          const { body } = await deps
            .client()
            .request<AuditVerification>('GET', `/v1/audit/verify${query({ tenant: opts.tenant })}`);
          result = body;
        }
        if (!report(result, deps.output())) process.exitCode = 1;
      }),
    );

  audit
    .command('search')
    .description('audit records, newest first')
    .option('--tenant <tenant>', 'tenant UUID or slug, or "platform"')
    .option('--actor <principal>')
    .option('--action <action>', 'exact, or a prefix such as tenant.*')
    .option('--outcome <outcome>', 'success | failure | denied')
    .option('--target-kind <kind>')
    .option('--target-id <uuid>')
    .option('--target-slug <slug>')
    .option('--correlation-id <id>')
    .option('--request-id <id>')
    .option('--from <time>', 'ISO 8601, inclusive')
    .option('--to <time>', 'ISO 8601, exclusive')
    .option('--limit <n>', 'records per page (1-500)', '50')
    .option('--all', 'follow every page')
    .action((opts: Record<string, string | boolean | undefined>) =>
      deps.run(async () => {
        const params: Record<string, string | undefined> = {};
        for (const k of [
          'tenant',
          'actor',
          'action',
          'outcome',
          'targetKind',
          'targetId',
          'targetSlug',
          'correlationId',
          'requestId',
          'from',
          'to',
          'limit',
        ])
          params[k] = opts[k] as string | undefined;
        const items: AuditRecordView[] = [];
        let cursor: string | undefined;
        do {
          const { body } = await deps
            .client()
            .request<{ items: AuditRecordView[]; nextCursor: string | null }>(
              'GET',
              `/v1/audit${query({ ...params, cursor })}`,
            );
          items.push(...body.items);
          cursor = body.nextCursor ?? undefined;
        } while (opts.all && cursor);
        const listed = renderList(items, deps.output());
        if (listed !== undefined) {
          console.log(listed);
          return;
        }
        console.log(
          table([
            ['TIME', 'ACTION', 'OUTCOME', 'ACTOR', 'TARGET', 'CORRELATION'],
            ...items.map((r) => [
              r.time,
              r.action,
              r.outcome,
              r.actor.principal,
              `${r.target.kind}/${r.target.slug ?? r.target.id ?? '-'}`,
              r.correlationId,
            ]),
          ]),
        );
      }),
    );

  audit
    .command('export')
    .description('write the audit log as JSON Lines with its signed checkpoints (verifiable offline)')
    .option('--tenant <tenant>', 'one tenant (UUID or slug), or "platform"')
    .option('--since <time>', 'records written at or after this time (ISO 8601)')
    .option('--until <time>', 'records written before this time (ISO 8601)')
    .option('-f, --file <path>', 'output file (default: standard output)')
    .action((opts: { tenant?: string; since?: string; until?: string; file?: string }) =>
      deps.run(async () => {
        const res = await deps
          .client()
          .fetch(
            'GET',
            `/v1/audit/export${query({ tenant: opts.tenant, since: opts.since, until: opts.until })}`,
            undefined,
            { accept: 'application/x-ndjson' },
          );
        if (!res.body) throw new Error('the server sent no export');
        const input = Readable.fromWeb(res.body as ReadableStream<Uint8Array>);
        if (opts.file) {
          await pipeline(input, fs.createWriteStream(opts.file));
          console.error(`wrote ${opts.file}`);
        } else await pipeline(input, process.stdout, { end: false });
      }),
    );

  audit
    .command('tree-head')
    .description(
      "the signed checkpoint (C2SP note) of a chain's Merkle tree; save it to verify against later",
    )
    .option('--tenant <tenant>', 'one tenant (UUID or slug), or "platform"')
    .option('--cosigned', 'the largest checkpoint witnesses cosigned, with their cosignatures')
    .action((opts: { tenant?: string; cosigned?: boolean }) =>
      deps.run(async () => {
        if (opts.cosigned) {
          const { body } = await deps
            .client()
            .request<{ chain: string; cosigned: { checkpoint: string } | null }>(
              'GET',
              `/v1/audit/checkpoint/cosigned${query({ tenant: opts.tenant })}`,
            );
          if (deps.output() !== 'table') console.log(JSON.stringify(body, null, 2));
          else if (body.cosigned) process.stdout.write(body.cosigned.checkpoint);
          else throw new Error(`no witness has cosigned a checkpoint of the log of ${body.chain} yet`);
          return;
        }
        const { body } = await deps
          .client()
          .request<SignedTreeHead>('GET', `/v1/audit/checkpoint${query({ tenant: opts.tenant })}`);
        if (deps.output() !== 'table') console.log(JSON.stringify(body, null, 2));
        else process.stdout.write(body.checkpoint);
      }),
    );

  audit
    .command('public-key')
    .description('the Ed25519 public key that signs checkpoints (PEM), for offline verification')
    .action(() =>
      deps.run(async () => {
        const { body } = await deps
          .client()
          .request<{ keyId: string; pem: string }>('GET', '/v1/audit/public-key');
        if (!isTable(deps.output())) console.log(JSON.stringify(body, null, 2));
        else process.stdout.write(body.pem);
      }),
    );

  audit
    .command('checkpoint')
    .description('sign a checkpoint of every chain head now')
    .action(() =>
      deps.run(async () => {
        const { body } = await deps
          .client()
          .request<{ id: string; time: string; heads: Record<string, unknown> }>(
            'POST',
            '/v1/audit/checkpoints',
          );
        if (!isTable(deps.output())) console.log(JSON.stringify(body, null, 2));
        else
          console.log(
            `checkpoint ${body.id} signed ${Object.keys(body.heads).length} chain heads at ${body.time}`,
          );
      }),
    );
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}
