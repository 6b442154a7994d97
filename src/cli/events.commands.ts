import type { Command } from 'commander';
import { stringify } from 'yaml';
import type { TenantryClient } from './client.js';
import { type OutputFormat, table } from './output.js';

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
}

function printEvent(e: CloudEventView, format: OutputFormat): void {
  if (format === 'json') console.log(JSON.stringify(e));
  else if (format === 'yaml') console.log(`---\n${stringify(e).trimEnd()}`);
  else
    console.log(
      [
        e.sequence.replace(/^0+(?=\d)/, ''),
        e.time,
        e.type.replace(/^dev\.tenantry\./, ''),
        e.subject,
        e.tenantid ?? 'platform',
      ].join('  '),
    );
}

/**
 * Reads Server-Sent Events from `res` until it ends; returns the last `id:` seen. A tiny parser
 * (data/id/comment lines) rather than an EventSource dependency: fetch has no EventSource in Node 20
 * and the stream's format is fixed by our own server.
 */
async function consume(
  res: Response,
  onEvent: (id: string | undefined, data: string) => void,
): Promise<string | undefined> {
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
        onEvent(id, data.join('\n'));
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
        if (!opts.follow) {
          for (;;) {
            const { body } = await client.request<{ items: CloudEventView[]; next: string | null }>(
              'GET',
              `/v1/events?${query(position)}&limit=500`,
            );
            for (const e of body.items) printEvent(e, format);
            if (body.items.length === 0 || !body.next) return;
            position = body.next;
          }
        }
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
              (await consume(res, (_id, data) => printEvent(JSON.parse(data) as CloudEventView, format))) ??
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
        const { body } = await deps.client().request<{
          items: {
            metadata: { name: string; uuid: string; tenant?: string };
            spec: { url: string; enabled?: boolean; eventTypes?: string[]; secret?: string };
          }[];
        }>('GET', `/v1/webhook-endpoints${opts.tenant ? `?tenant=${encodeURIComponent(opts.tenant)}` : ''}`);
        if (deps.output() !== 'table') {
          console.log(deps.output() === 'json' ? JSON.stringify(body.items, null, 2) : stringify(body.items));
          return;
        }
        console.log(
          table([
            ['NAME', 'TENANT', 'URL', 'ENABLED', 'EVENTS', 'SECRET'],
            ...body.items.map((e) => [
              e.metadata.name,
              e.metadata.tenant ?? 'platform',
              e.spec.url,
              String(e.spec.enabled !== false),
              e.spec.eventTypes ? String(e.spec.eventTypes.length) : 'all',
              e.spec.secret ?? '',
            ]),
          ]),
        );
      });
    });

  const showDeliveries = async (endpoint: string, status: string | undefined) => {
    const { body } = await deps.client().request<{
      items: {
        id: string;
        eventType: string;
        sequence: number;
        status: string;
        attempts: number;
        lastStatus: number | null;
        lastError: string | null;
        history: { latencyMs: number }[];
      }[];
    }>('GET', `/v1/webhooks/${encodeURIComponent(endpoint)}/deliveries${status ? `?status=${status}` : ''}`);
    if (deps.output() !== 'table') {
      console.log(deps.output() === 'json' ? JSON.stringify(body.items, null, 2) : stringify(body.items));
      return;
    }
    console.log(
      table([
        ['DELIVERY', 'SEQ', 'TYPE', 'STATUS', 'ATTEMPTS', 'LAST', 'LATENCY', 'ERROR'],
        ...body.items.map((d) => [
          d.id,
          String(d.sequence),
          d.eventType.replace(/^dev\.tenantry\./, ''),
          d.status,
          String(d.attempts),
          d.lastStatus === null ? '-' : String(d.lastStatus),
          d.history.length > 0 ? `${d.history.at(-1)!.latencyMs}ms` : '-',
          d.lastError ?? '',
        ]),
      ]),
    );
  };
  webhooks
    .command('deliveries')
    .description('deliveries of an endpoint with their last attempt')
    .argument('<endpoint>', 'endpoint slug or UUID')
    .option('--status <status>', 'pending | delivered | dead')
    .action(async (endpoint: string, opts: { status?: string }) =>
      deps.run(() => showDeliveries(endpoint, opts.status)),
    );
  webhooks
    .command('dead-letter')
    .description('dead-lettered deliveries of an endpoint')
    .argument('<endpoint>', 'endpoint slug or UUID')
    .action(async (endpoint: string) => deps.run(() => showDeliveries(endpoint, 'dead')));
  webhooks
    .command('requeue')
    .description('requeue dead-lettered deliveries (all of the endpoint, or the given ones)')
    .argument('<endpoint>', 'endpoint slug or UUID')
    .option('--delivery <id...>', 'only these deliveries')
    .action(async (endpoint: string, opts: { delivery?: string[] }) => {
      await deps.run(async () => {
        const { body } = await deps
          .client()
          .request<{ requeued: string[] }>(
            'POST',
            `/v1/webhooks/${encodeURIComponent(endpoint)}/requeue`,
            opts.delivery ? { deliveryIds: opts.delivery } : {},
          );
        console.log(`${body.requeued.length} deliveries requeued`);
      });
    });
}
