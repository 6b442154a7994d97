/**
 * Child process of the agents benchmark: the control plane alone (role api: HTTP API with the
 * agents' routes, no controller, no in-process agent), so that its CPU is measured apart from the
 * 50 agents and the load. Arguments: <databaseUrl> <dataDir>. Answers "cpu" with its CPU time (µs);
 * stops on "stop" or when the parent goes away.
 */
import { pino } from 'pino';
import { startTenantry } from '../../src/app.js';
import { loadConfig } from '../../src/config/config.js';

export interface AgentsServerReady {
  type: 'ready';
  url: string;
  /** A platform-admin token of the built-in issuer (join tokens). */
  token: string;
}

const [databaseUrl, dataDir] = process.argv.slice(2);
if (!databaseUrl || !dataDir || !process.send) {
  console.error('usage: forked by bench/suites/agents.ts with <databaseUrl> <dataDir>');
  process.exit(2);
}

const config = loadConfig(
  { port: 0, host: '127.0.0.1', dataDir },
  { ...process.env, DATABASE_URL: databaseUrl, TENANTRY_ROLE: 'api', TENANTRY_EMBEDDED_AGENT: 'false' },
);
const tenantry = await startTenantry(config, { logger: pino({ level: 'silent' }) });

let stopping = false;
async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  await tenantry.stop().catch(() => undefined);
  process.exit(0);
}
process.on('message', (m) => {
  if (m === 'stop') void stop();
  if (m === 'cpu') {
    const u = process.cpuUsage();
    process.send?.({ type: 'cpu', micros: u.user + u.system });
  }
});
process.on('disconnect', () => void stop());

const ready: AgentsServerReady = {
  type: 'ready',
  url: tenantry.url,
  token:
    (await tenantry.security?.issuer?.mint({
      subject: 'bench',
      roles: ['platform-admin'],
      sessionId: null,
    })) ?? '',
};
process.send(ready);
