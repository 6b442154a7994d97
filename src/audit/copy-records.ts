import { StringDecoder } from 'node:string_decoder';
import type pg from 'pg';
import { to as copyTo } from 'pg-copy-streams';
import { type AuditDocumentText, type AuditOutcome, hashAuditText } from './audit-hash.js';
import type { LinkedRecord } from './audit-verifier.js';

/** Which records to read: one chain, or the chains from `from` (inclusive) to `to` (exclusive); absent: all. */
export interface ChainRange {
  chain?: string;
  from?: string;
  to?: string;
  /** About how many records that is (the stored heads' seqs): sizes the server's hash table. */
  records?: number;
}

/**
 * The memory the server may give the hash table of a read's positions (work_mem, in kB; doubled by
 * hash_mem_multiplier's default): about 260 bytes a position. Too little, and the hash join works
 * in batches, each giving a share of every chain: the verifier would hold most records until
 * their turn came (correct, but memory of the size of the log instead of the server's).
 */
const hashMemoryKb = (records: number): number =>
  Math.min(1024 * 1024, Math.max(4096, Math.ceil((records * 300) / 1024)));

/** What copyRecords hands each record to: its chain fields, and whether its content matches its hash. */
export type LinkSink = (record: LinkedRecord, contentMatches: boolean) => void;

/**
 * Every sequenced record (of one chain, or a range of chains, or all) as one `COPY … TO STDOUT`
 * stream, in the order the server finds them (chains interleaved, each nearly in seq order), each
 * record's content hashed as it comes (format v1, hashAuditText) and handed to `sink`: one
 * statement and two sequential scans instead of a keyset query per page, and rows split from COPY's
 * text format instead of being built field by field by the driver — the read side of `verify` over
 * a million records. The jsonb values are canonicalised from the text PostgreSQL prints, not
 * parsed. Run on a client inside a repeatable-read transaction in the platform scope (the
 * caller's snapshot); reads only what the platform may read (RLS applies to `COPY (query)`).
 */
export async function copyRecords(client: pg.ClientBase, opts: ChainRange, sink: LinkSink): Promise<void> {
  // COPY takes no parameters: chains are tenant UUIDs or 'platform' (checked by the caller), quoted anyway.
  const where = ['true'];
  if (opts.chain !== undefined) where.push(`p.chain = ${literal(opts.chain)}`);
  if (opts.from !== undefined) where.push(`p.chain >= ${literal(opts.from)}`);
  if (opts.to !== undefined) where.push(`p.chain < ${literal(opts.to)}`);
  // Many chains: no order; the verifier puts each chain's records back in seq order
  // (addLinkInAnyOrder), and they come nearly in it (appended in order). Walked in (chain, seq)
  // order, each record fetched by its id, the server spent 10.6 µs of CPU per record (1.3M
  // records; random reads all over both tables), against 3.2 µs for a hash join of two sequential
  // scans. One chain, a small part of the log: walked in seq order. No parallel plan: the
  // verifier's own threads need the cores. The time comes as PostgreSQL prints a timestamptz in
  // UTC (auditTime formats it), not through tenantry_audit_time: no SQL function runs per row
  // (1.3 µs per record), and none that a superuser could replace.
  const plan =
    opts.chain !== undefined
      ? 'set local enable_hashjoin = off; set local enable_mergejoin = off; set local enable_sort = off'
      : `set local enable_nestloop = off; set local enable_mergejoin = off; set local enable_hashjoin = on; set local work_mem = '${hashMemoryKb(opts.records ?? 0)}kB'`;
  await client.query(
    `${plan}; set local max_parallel_workers_per_gather = 0; set local timezone = 'UTC'; set local datestyle = 'ISO, YMD'`,
  );
  const stream = client.query(
    copyTo(`copy (select a.id, p.chain, p.seq, a.time, a.tenant_id, a.app_id,
      a.actor_principal, a.actor_kind, a.session_id, a.action, a.target_kind, a.target_id, a.target_slug,
      a.before, a.after, a.outcome, a.decision, a.request_id, a.correlation_id, p.prev_hash, p.hash
      from audit_positions p join audit_records a on a.id = p.record_id
      where ${where.join(' and ')}${opts.chain !== undefined ? ' order by p.seq' : ''}) to stdout`),
  );
  // A character may be split between two chunks: the decoder keeps its first bytes for the next.
  const decoder = new StringDecoder('utf8');
  let rest = '';
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    const text = rest + decoder.write(chunk);
    let at = 0;
    for (;;) {
      const nl = text.indexOf('\n', at);
      if (nl < 0) break;
      addLine(sink, text.slice(at, nl));
      at = nl + 1;
    }
    rest = text.slice(at);
  }
  rest += decoder.end();
  if (rest !== '') addLine(sink, rest);
}

/**
 * What format v1 hashes as the time (tenantry_audit_time: `to_char(t at time zone 'UTC',
 * 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`) of a timestamptz as PostgreSQL prints it with TimeZone UTC
 * and DateStyle ISO: `2026-01-02 03:04:05.1234+00` (trailing zeros of the fraction dropped, no
 * fraction when it is 0), the year's digits as to_char's (4 at least, more after 9999; a year
 * before 1 as its BC number, then ` BC`, which to_char does not print); `infinity` (and SQL null),
 * which to_char gives as null. A test holds it equal to tenantry_audit_time.
 */
export function auditTime(text: string): string | null {
  // The common case: a four-digit year and six digits of fraction.
  if (
    text.length === 29 &&
    text.charCodeAt(4) === 0x2d &&
    text.charCodeAt(19) === 0x2e &&
    text.endsWith('+00')
  )
    return `${text.slice(0, 10)}T${text.slice(11, 26)}Z`;
  if (text === 'infinity' || text === '-infinity' || text === '\\N') return null;
  const m =
    /^([0-9]{4,}-[0-9]{2}-[0-9]{2}) ([0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]{1,6}))?\+00(?: BC)?$/.exec(text);
  if (!m) throw new Error(`unexpected timestamp in the audit log: ${text}`);
  return `${m[1]}T${m[2]}.${(m[3] ?? '').padEnd(6, '0')}Z`;
}

function literal(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

/** A COPY text field: `\N` is null; backslash escapes are undone (only when there is one). */
function field(f: string): string | null {
  if (f === '\\N') return null;
  if (!f.includes('\\')) return f;
  return f.replace(/\\(.)/g, (_, c: string) => ESCAPES[c] ?? c);
}

const ESCAPES: Record<string, string> = { b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v' };

/** A field of the fast path: no escape but `\N`, the whole field. */
const plain = (f: string): string | null => (f === '\\N' ? null : f);

/**
 * Whether `text`, fields of a COPY row, holds nothing JSON would escape (a quote, a control
 * character but the tabs between fields) and nothing COPY escaped (a backslash, but in a whole
 * `\N` field): then every string field in it is hashed as it stands.
 */
function plainFields(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 || (c < 0x20 && c !== 0x09)) return false;
    if (c === 0x5c) {
      // \N, the whole field
      if (text.charCodeAt(i + 1) !== 0x4e || (i > 0 && text.charCodeAt(i - 1) !== 0x09)) return false;
      if (i + 2 < text.length && text.charCodeAt(i + 2) !== 0x09) return false;
      i++;
    }
  }
  return true;
}

function addLine(sink: LinkSink, line: string): void {
  const f = line.split('\t');
  if (f.length !== 21) throw new Error(`unexpected COPY row of ${f.length} fields`);
  // The string fields: all but seq (2) and the jsonb values (13, 14, 16), which COPY prints as
  // PostgreSQL's JSON text, backslashes doubled.
  let jsonFrom = 13;
  for (let i = 0; i < 13; i++) jsonFrom += f[i]!.length;
  const jsonTo = jsonFrom + f[13]!.length + f[14]!.length + f[15]!.length + f[16]!.length + 4;
  const fast = plainFields(line.slice(0, jsonFrom)) && plainFields(f[15]!) && plainFields(line.slice(jsonTo));
  const s = fast ? plain : field;
  const doc: AuditDocumentText = {
    v: 1,
    id: s(f[0]!)!,
    chain: s(f[1]!)!,
    seq: Number(f[2]),
    time: auditTime(f[3]!)!,
    tenantId: s(f[4]!),
    appId: s(f[5]!),
    actor: { principal: s(f[6]!)!, kind: s(f[7]!)! },
    sessionId: s(f[8]!),
    action: s(f[9]!)!,
    target: { kind: s(f[10]!)!, id: s(f[11]!), slug: s(f[12]!) },
    before: field(f[13]!) ?? 'null',
    after: field(f[14]!) ?? 'null',
    outcome: s(f[15]!) as AuditOutcome,
    decision: field(f[16]!) ?? 'null',
    requestId: s(f[17]!)!,
    correlationId: s(f[18]!)!,
    prevHash: s(f[19]!)!,
  };
  const stored = s(f[20]!)!;
  sink(
    {
      id: doc.id,
      chain: doc.chain,
      seq: doc.seq,
      tenantId: doc.tenantId,
      prevHash: doc.prevHash,
      hash: stored,
    },
    hashAuditText(doc, fast) === stored,
  );
}
