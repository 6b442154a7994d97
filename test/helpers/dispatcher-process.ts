/**
 * A webhook dispatcher in a process of its own, for crash tests: it runs until killed.
 * env: APP_URL (the application role's connection), PLATFORM_URL (the platform role's) and the TENANTRY_* settings.
 */
import pino from 'pino';
import { loadConfig } from '../../src/config/config.js';
import { createDb } from '../../src/db/database.js';
import { WebhookDispatcher } from '../../src/webhooks/webhook-dispatcher.js';

const db = createDb(process.env.APP_URL!, 4, { platformUrl: process.env.PLATFORM_URL! });
const dispatcher = new WebhookDispatcher(
  db,
  loadConfig({}, process.env),
  // Its log goes to stderr (stdout says when it runs); TEST_LOG_LEVEL=info shows its attempts.
  pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }, pino.destination(2)),
);
dispatcher.start();
process.stdout.write('dispatching\n');
