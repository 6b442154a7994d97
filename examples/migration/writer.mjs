// A tenant application that keeps writing: one row every 50 ms into the database resource named
// on the command line, with the credentials `tenantry credentials` hands out. A write refused (the
// migration's short write freeze, then the old role's end at the cut-over) is retried with freshly
// fetched credentials (the new side's from the cut-over's commit on), so no row is lost.
// Ctrl-C (SIGINT, or SIGTERM) stops it and prints how many rows it wrote.
//   node examples/migration/writer.mjs circlek-eu-prod.database           # write until stopped
//   node examples/migration/writer.mjs circlek-eu-prod.database --count   # count the rows there
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import pg from 'pg';

const [resource, mode] = process.argv.slice(2);
if (!resource) throw new Error('usage: writer.mjs RESOURCE [--count]');
const cli = fileURLToPath(new URL('../../bin/tenantry.js', import.meta.url));
const say = (stream, line) => stream.write(`${line}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
/** The resource's credentials; while it is not Ready (409, e.g. before it was provisioned) it asks again. */
async function credentials() {
  for (let attempt = 0; ; attempt++) {
    try {
      const out = execFileSync(process.execPath, [cli, '-o', 'json', 'credentials', resource], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      return JSON.parse(out);
    } catch (err) {
      if (attempt >= 240 || !String(err.stderr).includes('credentials.not_provisioned')) throw err;
      if (attempt === 0) say(process.stderr, 'writer: not provisioned (yet): asking again every 250 ms');
      await sleep(250);
    }
  }
}

let client;
let url;
async function connect() {
  await client?.end().catch(() => undefined);
  const c = await credentials();
  if (c.url !== url)
    say(process.stderr, `writer: connecting as ${c.username} to ${c.database} on ${c.host}:${c.port}`);
  url = c.url;
  client = new pg.Client({ connectionString: url });
  client.on('error', () => undefined); // a session ended by the freeze: the next write reconnects
  await client.connect();
}

await connect();
if (mode === '--count') {
  const r = await client.query('select count(*)::int as n, max(n) as last from writes');
  say(process.stdout, `rows: ${r.rows[0].n} (last written: ${r.rows[0].last})`);
  await client.end();
  process.exit(0);
}
await client.query(
  'create table if not exists writes (n int primary key, at timestamptz not null default now())',
);
let n = (await client.query('select coalesce(max(n), 0)::int as n from writes')).rows[0].n;
let stopping = false;
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => (stopping = true));
let retries = 0;
while (!stopping) {
  try {
    await client.query('insert into writes (n) values ($1)', [n + 1]);
    n += 1;
    await sleep(50);
  } catch (err) {
    retries += 1;
    say(
      process.stderr,
      `writer: row ${n + 1} refused (${err.code ?? err.message}); retrying with fresh credentials`,
    );
    await sleep(250);
    await connect().catch(() => undefined);
  }
}
say(process.stdout, `writer: wrote rows 1..${n} (${retries} refused attempts retried)`);
await client.end().catch(() => undefined);
