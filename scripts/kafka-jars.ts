/**
 * Resolves the test Kafka broker's jars from Maven Central into the cache (test/infra/kafka-broker.ts)
 * so the suite does not spend its first minute on it: `npm run kafka:jars` (CI runs it before the tests).
 */
import { kafkaUnavailableReason, resolveKafkaJars } from '../test/infra/kafka-broker.js';

const reason = await kafkaUnavailableReason();
if (reason) {
  console.error(`cannot resolve the Kafka jars: ${reason}`);
  process.exit(1);
}
const started = Date.now();
const dir = await resolveKafkaJars();
console.log(`Kafka broker jars in ${dir} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
