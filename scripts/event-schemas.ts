/**
 * Writes docs/events/<type>.json from the TypeBox event schemas and records the hash of every newly
 * published one in src/events/published-event-schemas.json (a recorded hash is never overwritten:
 * src/events/event-schemas.test.ts then fails on a changed schema — publish a new version instead).
 * With --check, fails when a file is missing, stale or not generated (like scripts/openapi.ts).
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { publishedEventSchemas } from '../src/events/event-schemas.js';

const dir = path.resolve(import.meta.dirname, '../docs/events');
const schemas = publishedEventSchemas();
if (process.argv.includes('--check')) {
  const stale = Object.entries(schemas).filter(
    ([file, text]) =>
      !fs.existsSync(path.join(dir, file)) || fs.readFileSync(path.join(dir, file), 'utf8') !== text,
  );
  const extra = fs.existsSync(dir)
    ? fs.readdirSync(dir).filter((f) => f.endsWith('.json') && !(f in schemas))
    : [];
  if (stale.length > 0 || extra.length > 0) {
    console.error(
      `docs/events is out of date (${[...stale.map(([f]) => f), ...extra].join(', ')}): run \`npm run events:schemas\``,
    );
    process.exit(1);
  }
  console.log(`docs/events is up to date (${Object.keys(schemas).length} schemas)`);
} else {
  fs.mkdirSync(dir, { recursive: true });
  for (const [file, text] of Object.entries(schemas)) fs.writeFileSync(path.join(dir, file), text);
  const lockFile = path.resolve(import.meta.dirname, '../src/events/published-event-schemas.json');
  const lock = JSON.parse(fs.readFileSync(lockFile, 'utf8')) as Record<string, string>;
  const added = Object.entries(schemas).filter(([file]) => !(file in lock));
  for (const [file, text] of added) lock[file] = createHash('sha256').update(text).digest('hex');
  const sorted = Object.fromEntries(Object.entries(lock).sort(([a], [b]) => a.localeCompare(b)));
  fs.writeFileSync(lockFile, `${JSON.stringify(sorted, null, 2)}\n`);
  console.log(`wrote ${Object.keys(schemas).length} schemas to docs/events; ${added.length} newly published`);
}
