import type { Command } from 'commander';
import { stringify } from 'yaml';
import { KIND_DEFINITIONS } from '../registry/kinds/index.js';
import type { TenantryClient } from './client.js';
import { isTable, type OutputFormat, renderList, table } from './output.js';

interface Deps {
  client: () => TenantryClient;
  output: () => OutputFormat;
  run: (action: () => Promise<void>) => Promise<void>;
}

interface CloudEventView {
  id: string;
  type: string;
  subject: string;
  time: string;
  tenantid?: string;
  sequence: string;
  data?: { slug?: unknown };
}

const EVENT_HEADER = ['SEQ', 'TIME', 'TYPE', 'SUBJECT', 'TENANT'];

/**
 * Slugs for the UUIDs in events (subject and tenant), looked up once each. An object the caller may
 * not read, or that is gone for good, keeps its UUID.
 */
class Names {
  private readonly cache = new Map<string, Promise<string | undefined>>();
  constructor(private readonly client: TenantryClient) {}

  private lookup(path: string, uuid: string): Promise<string | undefined> {
    const key = `${path}/${uuid}`;
    let found = this.cache.get(key);
    if (!found) {
      found = this.client
        .request<{ metadata: { name: string } }>('GET', `/v1/${path}/${uuid}?includeDeleted=true`)
        .then(
          (r) => r.body.metadata.name,
          () => undefined,
        );
      this.cache.set(key, found);
    }
    return found;
  }

  tenant(uuid: string | undefined): Promise<string> {
    if (!uuid) return Promise.resolve('platform');
    return this.lookup('tenants', uuid).then((slug) => slug ?? uuid);
  }

  /** `tenant/circlek-eu-prod` for `tenants/6846a7a4-…` (the event's own slug when it carries one). */
  async subject(e: CloudEventView): Promise<string> {
    const [plural, uuid] = e.subject.split('/');
    const def = KIND_DEFINITIONS.find((d) => `${d.kind.toLowerCase()}s` === plural);
    if (!def || !uuid) return e.subject;
    const own = typeof e.data?.slug === 'string' ? e.data.slug : undefined;
    const slug = own ?? (await this.lookup(def.path, uuid));
    return slug ? `${def.cli.name}/${slug}` : e.subject;
  }
}

async function eventRow(e: CloudEventView, format: OutputFormat, names: Names): Promise<string[]> {
  const wide = format === 'wide';
  return [
    e.sequence.replace(/^0+(?=\d)/, ''),
    e.time,
    e.type.replace(/^dev\.tenantry\./, ''),
    wide ? e.subject : await names.subject(e),
    wide ? (e.tenantid ?? 'platform') : await names.tenant(e.tenantid),
  ];
}

async function printEvent(e: CloudEventView, format: OutputFormat, names: Names): Promise<void> {
  if (format === 'json') console.log(JSON.stringify(e));
  else if (format === 'yaml') console.log(`---\n${stringify(e).trimEnd()}`);
  else console.log((await eventRow(e, format, names)).join('  '));
}

/**
 * Reads Server-Sent Events from `res` until it ends; returns the last `id:` seen. A tiny parser
 * (data/id/comment lines) rather than an EventSource dependency: fetch has no EventSource in Node 20
 * and the stream's format is fixed by our own server.
 */
async function consume(res: Response, onEvent: (data: string) => Promise<void>): Promise<string | undefined> {
  const decoder = new TextDecoder();
  let buffer = '';
  let last: string | undefined;
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(chunk, { stream: true });
    let end = buffer.indexOf('\n\n');
    while (end >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let id: string | undefined;
      const data: string[] = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('id:')) id = line.slice(3).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).trimStart());
      }
      if (data.length > 0) {
        await onEvent(data.join('\n'));
        if (id) last = id;
      }
      end = buffer.indexOf('\n\n');
    }
  }
  return last;
}

export function registerEventCommands(program: Command, deps: Deps): void {
  const events = program.command('events').description('the event log: replay and live tail');
  events
    .command('tail')
    .description(
      'print events as they happen (Server-Sent Events); resumes where it left off if the connection drops',
    )
    .option('--tenant <tenant>', 'tenant slug or UUID, or "platform"; absent: every stream you may see')
    .option('--from <position>', 'start after this sequence (with --tenant) or cursor')
    .option('--no-follow', 'print what is there and exit')
    .action(async (opts: { tenant?: string; from?: string; follow: boolean }) => {
      await deps.run(async () => {
        const client = deps.client();
        const format = deps.output();
        const query = (after: string | undefined) =>
          new URLSearchParams({
            ...(opts.tenant ? { tenant: opts.tenant } : {}),
            ...(after ? { after } : {}),
          }).toString();
        let position = opts.from;
        const names = new Names(client);
        if (!opts.follow) {
          // What is there now: one list ({"items": [...]} in json/yaml, a table with a header).
          const items: CloudEventView[] = [];
          for (;;) {
            const { body } = await client.request<{ items: CloudEventView[]; next: string | null }>(
              'GET',
              `/v1/events?${query(position)}&limit=500`,
            );
            items.push(...body.items);
            if (body.items.length === 0 || !body.next) break;
            position = body.next;
          }
          const listed = renderList(items, format);
          if (listed !== undefined) console.log(listed);
          else {
            const rows: string[][] = [];
            for (const e of items) rows.push(await eventRow(e, format, names));
            console.log(table([EVENT_HEADER, ...rows]));
          }
          return;
        }
        // Live: one line per event as it comes (JSON Lines with -o json), under a header.
        if (isTable(format)) console.log(EVENT_HEADER.join('  '));
        const stop = new AbortController();
        process.once('SIGINT', () => stop.abort());
        while (!stop.signal.aborted) {
          try {
            const res = await client.stream(
              `/v1/events/stream?${query(undefined)}`,
              position ? { 'last-event-id': position } : {},
              stop.signal,
            );
            position =
              (await consume(res, (data) => printEvent(JSON.parse(data) as CloudEventView, format, names))) ??
              position;
          } catch (err) {
            if (stop.signal.aborted) return;
            if ((err as { status?: number }).status && (err as { status: number }).status >= 400) throw err;
          }
          if (!stop.signal.aborted) await new Promise((r) => setTimeout(r, 1_000));
        }
      });
    });

  const webhooks = program
    .command('webhooks')
    .description('webhook endpoints: deliveries, dead letter, requeue');
  webhooks
    .command('list')
    .description('list webhook endpoints')
    .option('--tenant <tenant>', 'a tenant, or "platform" for platform-wide endpoints')
    .action(async (opts: { tenant?: string }) => {
      await deps.run(async () => {
        const items = await listEndpoints(deps.client(), opts.tenant);
        const listed = renderList(items, deps.output());
        if (listed !== undefined) {
          console.log(listed);
          return;
        }
        const names = new Names(deps.client());
        const rows: string[][] = [];
        for (const e of items)
          rows.push([
            e.metadata.name,
            await names.tenant(e.metadata.tenant),
            e.spec.url,
            String(e.spec.enabled !== false),
            e.spec.eventTypes ? String(e.spec.eventTypes.length) : 'all',
            e.spec.secret ?? '',
            ...(deps.output() === 'wide' ? [e.metadata.uuid] : []),
          ]);
        console.log(
          table([
            [
              'NAME',
              'TENANT',
              'URL',
              'ENABLED',
              'EVENTS',
              'SECRET',
              ...(deps.output() === 'wide' ? ['UUID'] : []),
            ],
            ...rows,
          ]),
        );
      });
    });

  /** The deliveries of the endpoints named, newest first, each with its endpoint's name. */
  const deliveriesOf = async (
    endpoints: Endpoint[],
    status: string | undefined,
    since: number | undefined,
  ) => {
    const all: (DeliveryView & { endpoint: string })[] = [];
    for (const e of endpoints) {
      const q = new URLSearchParams({
        limit: since === undefined ? '50' : '500',
        ...(status ? { status } : {}),
      });
      const { body } = await deps
        .client()
        .request<{ items: DeliveryView[] }>('GET', `/v1/webhooks/${e.uuid}/deliveries?${q}`);
      for (const d of body.items)
        if (since === undefined || Date.parse(d.createdAt) >= since) all.push({ endpoint: e.label, ...d });
    }
    return all.sort((a, b) => Date.parse(b.createdAt) - Date.parse(a.createdAt));
  };

  const showDeliveries = async (ref: string | undefined, opts: EndpointOpts, status: string | undefined) => {
    const endpoints = await resolveEndpoints(deps.client(), ref, opts.tenant);
    const items = await deliveriesOf(endpoints, status, parseSince(opts.since));
    const listed = renderList(items, deps.output());
    if (listed !== undefined) {
      console.log(listed);
      return;
    }
    console.log(
      table([
        ['ENDPOINT', 'DELIVERY', 'SEQ', 'TYPE', 'STATUS', 'ATTEMPTS', 'LAST', 'LATENCY', 'CREATED', 'ERROR'],
        ...items.map((d) => [
          d.endpoint,
          d.id,
          String(d.sequence),
          d.eventType.replace(/^dev\.tenantry\./, ''),
          d.status,
          String(d.attempts),
          d.lastStatus === null ? '-' : String(d.lastStatus),
          d.history.length > 0 ? `${d.history.at(-1)!.latencyMs}ms` : '-',
          d.createdAt,
          d.lastError ?? '',
        ]),
      ]),
    );
  };
  const endpointArgument = (c: Command) =>
    c
      .argument(
        '[endpoint]',
        'endpoint name (with --tenant), tenant.name slug or UUID; absent: every endpoint',
      )
      .option('--tenant <tenant>', 'endpoints of this tenant (slug or UUID), or "platform"')
      .option(
        '--since <time>',
        'deliveries created at or after this time (ISO 8601, or an age: 30m, 12h, 7d)',
      );
  endpointArgument(webhooks.command('deliveries'))
    .description('deliveries with their last attempt (of one endpoint, or of every endpoint)')
    .option('--status <status>', 'pending | delivered | dead')
    .action(async (endpoint: string | undefined, opts: EndpointOpts & { status?: string }) =>
      deps.run(() => showDeliveries(endpoint, opts, opts.status)),
    );
  endpointArgument(webhooks.command('dead-letter'))
    .description('dead-lettered deliveries (of one endpoint, or of every endpoint)')
    .action(async (endpoint: string | undefined, opts: EndpointOpts) =>
      deps.run(() => showDeliveries(endpoint, opts, 'dead')),
    );
  endpointArgument(webhooks.command('requeue'))
    .description(
      'requeue dead-lettered deliveries (of one endpoint or every endpoint; all, or the given ones)',
    )
    .option('--delivery <id...>', 'only these deliveries')
    .action(async (endpoint: string | undefined, opts: EndpointOpts & { delivery?: string[] }) => {
      await deps.run(async () => {
        const endpoints = await resolveEndpoints(deps.client(), endpoint, opts.tenant);
        const since = parseSince(opts.since);
        const wanted = opts.delivery?.map((id) => id.toLowerCase());
        // Across endpoints (or with --since) the dead letter says which delivery is whose.
        const dead =
          endpoints.length === 1 && since === undefined
            ? undefined
            : await deliveriesOf(endpoints, 'dead', since);
        if (dead && wanted) {
          const missing = wanted.filter((id) => !dead.some((d) => d.id === id));
          if (missing.length > 0)
            throw new CliError(
              `not in the dead letter of ${endpoint ?? 'any endpoint'}: ${missing.join(', ')}`,
            );
        }
        let requeued = 0;
        for (const e of endpoints) {
          const ids = dead
            ? dead
                .filter((d) => d.endpoint === e.label && (!wanted || wanted.includes(d.id)))
                .map((d) => d.id)
            : wanted;
          if (ids?.length === 0) continue;
          const { body } = await deps
            .client()
            .request<{ requeued: string[] }>(
              'POST',
              `/v1/webhooks/${e.uuid}/requeue`,
              ids ? { deliveryIds: ids } : {},
            );
          if (body.requeued.length > 0) console.log(`${e.label}: ${body.requeued.length} requeued`);
          requeued += body.requeued.length;
        }
        console.log(`${requeued} deliveries requeued`);
      });
    });
}

class CliError extends Error {}

interface EndpointOpts {
  tenant?: string;
  since?: string;
}

interface DeliveryView {
  id: string;
  eventType: string;
  sequence: number;
  status: string;
  attempts: number;
  lastStatus: number | null;
  lastError: string | null;
  createdAt: string;
  history: { latencyMs: number }[];
}

interface EndpointView {
  metadata: { name: string; uuid: string; tenant?: string };
  spec: { url: string; enabled?: boolean; eventTypes?: string[]; secret?: string };
}

/** An endpoint as the commands name it: `tenant.name` (its slug), or `name` for a platform-wide one. */
interface Endpoint {
  uuid: string;
  label: string;
}

async function listEndpoints(client: TenantryClient, tenant: string | undefined): Promise<EndpointView[]> {
  const items: EndpointView[] = [];
  let cursor: string | null = null;
  do {
    const q: URLSearchParams = new URLSearchParams({ limit: '500', ...(tenant ? { tenant } : {}) });
    if (cursor) q.set('cursor', cursor);
    const { body } = await client.request<{ items: EndpointView[]; nextCursor: string | null }>(
      'GET',
      `/v1/webhook-endpoints?${q}`,
    );
    items.push(...body.items);
    cursor = body.nextCursor;
  } while (cursor);
  return items;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * The endpoints a webhooks command means: the one named (as `webhooks list` shows it, the name with
 * `--tenant`; or its `tenant.name` slug or UUID), or every endpoint (of `--tenant`) when none is.
 */
async function resolveEndpoints(
  client: TenantryClient,
  ref: string | undefined,
  tenant: string | undefined,
): Promise<Endpoint[]> {
  const names = new Names(client);
  const endpoint = async (e: EndpointView): Promise<Endpoint> => {
    const t = e.metadata.tenant ? await names.tenant(e.metadata.tenant) : undefined;
    return { uuid: e.metadata.uuid, label: t ? `${t}.${e.metadata.name}` : e.metadata.name };
  };
  if (ref && (UUID.test(ref) || (ref.includes('.') && !tenant))) {
    const { body } = await client.request<EndpointView>(
      'GET',
      `/v1/webhook-endpoints/${encodeURIComponent(ref)}`,
    );
    return [await endpoint(body)];
  }
  const all = await listEndpoints(client, tenant);
  const matching = ref ? all.filter((e) => e.metadata.name === ref) : all;
  if (ref && matching.length === 0)
    throw new CliError(
      `no webhook endpoint named "${ref}"${tenant ? ` of tenant ${tenant}` : ''}; see tenantry webhooks list`,
    );
  const found = await Promise.all(matching.map(endpoint));
  if (ref && found.length > 1)
    throw new CliError(
      `${found.length} webhook endpoints are named "${ref}" (${found.map((e) => e.label).join(', ')}); add --tenant or give the full name`,
    );
  return found;
}

/** `--since`: an ISO 8601 time, or an age (`90s`, `30m`, `12h`, `7d`) back from now. */
function parseSince(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const age = /^(\d+)([smhd])$/.exec(text.trim());
  if (age) return Date.now() - Number(age[1]) * { s: 1e3, m: 6e4, h: 3.6e6, d: 8.64e7 }[age[2] as 's']!;
  const t = Date.parse(text);
  if (Number.isNaN(t))
    throw new CliError(`--since wants an ISO 8601 time or an age such as 30m, 12h, 7d; got "${text}"`);
  return t;
}
