import { createHash } from 'node:crypto';

const ADJECTIVES = [
  'brave',
  'calm',
  'quiet',
  'swift',
  'bold',
  'bright',
  'clever',
  'eager',
  'gentle',
  'happy',
  'keen',
  'lively',
  'lucky',
  'merry',
  'noble',
  'proud',
  'quick',
  'sharp',
  'steady',
  'sunny',
  'tidy',
  'vivid',
  'warm',
  'wise',
  'young',
  'zesty',
  'agile',
  'fair',
  'grand',
  'jolly',
  'kind',
  'loyal',
];
const ANIMALS = [
  'wolf',
  'seal',
  'fox',
  'hawk',
  'bear',
  'lynx',
  'otter',
  'owl',
  'crane',
  'deer',
  'eagle',
  'falcon',
  'heron',
  'ibex',
  'koala',
  'lark',
  'marten',
  'newt',
  'orca',
  'panda',
  'quail',
  'raven',
  'swan',
  'tiger',
  'viper',
  'whale',
  'yak',
  'zebra',
  'badger',
  'bison',
  'finch',
  'gecko',
];

/** `{adjective}-{animal}` derived from a service UUID: stable for the service, spread over 1,024 pairs. */
export function instanceNameOf(serviceId: string): string {
  const h = createHash('sha256').update(serviceId).digest();
  return `${ADJECTIVES[h[0]! % ADJECTIVES.length]}-${ANIMALS[h[1]! % ANIMALS.length]}`;
}

/**
 * Seed 000's replica name without its index: `{system}-{region}-{environment type}[-{qualifiers}]_{instance}`
 * (`plan-eu-prod_brave-wolf`, `plan-eu-uat-dev_quiet-fox`); the tenant's qualifier, then the
 * deployment's. A replica is this plus `-{n}`.
 */
export function replicaBaseName(p: {
  system: string;
  region: string;
  environmentType: string;
  qualifiers: (string | null | undefined)[];
  instance: string;
}): string {
  const head = [p.system, p.region, p.environmentType, ...p.qualifiers.filter((q): q is string => !!q)];
  return `${head.join('-')}_${p.instance}`;
}
