/**
 * Child process of the HTTP benchmark: the full Tenantry (startTenantry) and a bare Fastify
 * hello-world (JSON and HTML), each on its own port. Load comes from the parent, so the servers do not share an
 * event loop with the load generator. Arguments: <databaseUrl> <dataDir>. Stops on "stop" or when
 * the parent goes away.
 */
import Fastify from 'fastify';
import { pino } from 'pino';
import { startTenantry } from '../../src/app.js';
import { loadConfig } from '../../src/config/config.js';

export interface ServersReady {
  type: 'ready';
  tenantryUrl: string;
  bareUrl: string;
  /** A platform-admin token of the built-in issuer, for the load. */
  token: string;
}

const [databaseUrl, dataDir] = process.argv.slice(2);
if (!databaseUrl || !dataDir || !process.send) {
  console.error('usage: forked by bench/suites/http.ts with <databaseUrl> <dataDir>');
  process.exit(2);
}

const config = loadConfig({ port: 0, host: '127.0.0.1', dataDir }, { DATABASE_URL: databaseUrl });
const tenantry = await startTenantry(config, { logger: pino({ level: 'silent' }) });
const bare = Fastify({ logger: false });
bare.get('/hello', async () => ({ hello: 'world' }));
// The console benchmark's baseline: a bare HTML page.
bare.get('/hello.html', async (_request, reply) =>
  reply
    .type('text/html; charset=utf-8')
    .send('<!doctype html><html lang="en"><title>hello</title><p>hello</p></html>'),
);
await bare.listen({ port: 0, host: '127.0.0.1' });
const address = bare.server.address();
const barePort = typeof address === 'object' && address ? address.port : 0;

let stopping = false;
async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  await bare.close().catch(() => undefined);
  await tenantry.stop().catch(() => undefined);
  process.exit(0);
}
process.on('message', (m) => {
  if (m === 'stop') void stop();
});
process.on('disconnect', () => void stop());

const ready: ServersReady = {
  type: 'ready',
  tenantryUrl: tenantry.url,
  bareUrl: `http://127.0.0.1:${barePort}`,
  token:
    (await tenantry.security?.issuer?.mint({
      subject: 'bench',
      roles: ['platform-admin'],
      sessionId: null,
    })) ?? '',
};
process.send(ready);
