export { toProviderError } from './kafka-errors.js';
export { createKafkaProvider, type KafkaProviderOptions, KafkaTopicProvider } from './kafka-provider.js';
