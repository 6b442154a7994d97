import type Kafkajs from 'kafkajs';
import { lazyModule } from '../lazy-module.js';

export type KafkajsModule = typeof Kafkajs;

/** kafkajs (~11 MiB of RSS), loaded by the first Kafka provider call or event-bus start. */
export const kafkajs = lazyModule<KafkajsModule>(() => import('kafkajs').then((m) => m.default));
