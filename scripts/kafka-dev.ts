/**
 * A local Kafka broker for running Tenantry against (the tests' broker: KRaft, SASL/PLAIN, ACLs on):
 *   npm run kafka:dev            (KAFKA_PORT, default 9092; data kept in .tenantry/kafka)
 * prints the TENANTRY_KAFKA_* variables to use; Ctrl-C stops it. Consumer logins for trying the
 * ACLs by hand: KAFKA_USERS=circlek-eu-prod-store-pl,circlek-eu-prod-store-es (their passwords are printed).
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { startKafkaBroker } from '../test/infra/kafka-broker.js';

const dataDir = path.resolve(process.env.KAFKA_DATA_DIR ?? '.tenantry/kafka');
fs.mkdirSync(dataDir, { recursive: true });
// The admin password survives restarts with the data (the broker's JAAS users are in its config).
const passwordFile = path.join(dataDir, 'admin-password');
if (!fs.existsSync(passwordFile))
  fs.writeFileSync(passwordFile, randomBytes(18).toString('base64url'), { mode: 0o600 });
const password = fs.readFileSync(passwordFile, 'utf8').trim();

const broker = await startKafkaBroker({
  port: Number(process.env.KAFKA_PORT ?? 9092),
  dataDir,
  password,
  users: (process.env.KAFKA_USERS ?? '').split(',').filter((u) => u.length > 0),
});
console.log(`Kafka ${broker.brokers} ready in ${broker.startMillis} ms (data in ${dataDir}, log ${dataDir}/server.log)

export TENANTRY_KAFKA_BROKERS=${broker.brokers}
export TENANTRY_KAFKA_SASL_MECHANISM=plain
export TENANTRY_KAFKA_SASL_USERNAME=${broker.username}
export TENANTRY_KAFKA_SASL_PASSWORD=${broker.password}
`);
for (const [user, pw] of Object.entries(broker.users)) console.log(`consumer login ${user} / ${pw}`);
console.log('Ctrl-C stops the broker.');

let stopping = false;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (stopping) return;
    stopping = true;
    console.log('stopping Kafka');
    void broker.stop().then(() => process.exit(0));
  });
}
