/**
 * Writes docs/openapi.json from the route schemas (no database needed), or with --check fails when
 * the checked-in file is out of date.
 */
import { generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs';
import pino from 'pino';
import { compose } from '../src/app.js';
import { AuditSigner } from '../src/audit/index.js';
import { loadConfig } from '../src/config/config.js';
import { createDb } from '../src/db/database.js';
import { BuiltinIssuer } from '../src/identity/builtin-issuer.js';
import { Metrics } from '../src/observability/metrics.js';

const config = loadConfig({}, {});
// The pool connects lazily and is never used here.
const db = createDb('postgres://unused@127.0.0.1:1/unused', 1);
const issuer = await BuiltinIssuer.ephemeral(config.identity.issuer, config.identity.audience);
const { server: app } = await compose({
  config,
  db,
  logger: pino({ level: 'silent' }),
  metrics: new Metrics(),
  auditSigner: new AuditSigner(generateKeyPairSync('ed25519').privateKey),
  issuer,
});
if (!app) throw new Error('compose() built no API');
await app.ready();
const text = `${JSON.stringify(app.swagger(), null, 2)}\n`;
await app.close();
await db.destroy();
const file = new URL('../docs/openapi.json', import.meta.url);
if (process.argv.includes('--check')) {
  const current = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
  if (current !== text) {
    console.error('docs/openapi.json is out of date: run `npm run openapi`');
    process.exit(1);
  }
  console.log('docs/openapi.json is up to date');
} else {
  fs.writeFileSync(file, text);
  console.log('wrote docs/openapi.json');
}
