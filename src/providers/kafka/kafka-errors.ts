import { ProviderError } from '../provider.js';
import { type KafkajsModule, kafkajs as lazyKafkajs } from './kafkajs.js';

/** Broker answers that mean "the request is wrong": retrying the same request cannot help. */
const PERMANENT: Record<string, string> = {
  INVALID_TOPIC_EXCEPTION: 'InvalidName',
  INVALID_PARTITIONS: 'InvalidConfiguration',
  INVALID_REPLICATION_FACTOR: 'InvalidConfiguration',
  INVALID_REPLICA_ASSIGNMENT: 'InvalidConfiguration',
  INVALID_CONFIG: 'InvalidConfiguration',
  INVALID_REQUEST: 'InvalidConfiguration',
  POLICY_VIOLATION: 'InvalidConfiguration',
  TOPIC_AUTHORIZATION_FAILED: 'NotAuthorized',
  GROUP_AUTHORIZATION_FAILED: 'NotAuthorized',
  CLUSTER_AUTHORIZATION_FAILED: 'NotAuthorized',
  SECURITY_DISABLED: 'SecurityDisabled',
  SASL_AUTHENTICATION_FAILED: 'AuthenticationFailed',
  UNSUPPORTED_SASL_MECHANISM: 'AuthenticationFailed',
  ILLEGAL_SASL_STATE: 'AuthenticationFailed',
  UNSUPPORTED_VERSION: 'UnsupportedBroker',
};

/** The kafkajs error underneath retry and aggregate wrappers. */
function innermost(k: KafkajsModule, err: unknown): unknown {
  const { KafkaJSAggregateError, KafkaJSNumberOfRetriesExceeded } = k;
  let e = err;
  for (let i = 0; i < 5; i++) {
    if (e instanceof KafkaJSNumberOfRetriesExceeded && e.cause) e = e.cause;
    else if (e instanceof KafkaJSAggregateError && e.errors.length > 0) e = e.errors[0];
    else break;
  }
  return e;
}

/** The protocol error type (`UNKNOWN_TOPIC_OR_PARTITION`, …) of a kafkajs failure, if it is one. */
export function kafkaErrorType(err: unknown): string | undefined {
  const kafkajs = lazyKafkajs.loaded();
  if (!kafkajs) return undefined;
  const e = innermost(kafkajs, err);
  return e instanceof kafkajs.KafkaJSProtocolError ? e.type : undefined;
}

/**
 * Turns a kafkajs failure into a ProviderError: anything about reaching the cluster (refused
 * connection, timeout, no controller, leader moving) is retryable `BrokerUnavailable`; a request the
 * broker refuses on its merits is permanent. Errors that are not Kafka's pass through unchanged (before
 * kafkajs is loaded, none can be).
 */
export function toProviderError(err: unknown, action: string): unknown {
  const kafkajs = lazyKafkajs.loaded();
  if (err instanceof ProviderError || !kafkajs) return err;
  const e = innermost(kafkajs, err);
  if (!(e instanceof kafkajs.KafkaJSError)) return err;
  const message = `Kafka: ${action}: ${e.message}`;
  const type = e instanceof kafkajs.KafkaJSProtocolError ? e.type : undefined;
  const permanent = type ? PERMANENT[type] : undefined;
  if (permanent) return new ProviderError(message, permanent, false, { cause: err });
  if (e.name === 'KafkaJSSASLAuthenticationError')
    return new ProviderError(message, 'AuthenticationFailed', false, { cause: err });
  if (e.name === 'KafkaJSServerDoesNotSupportApiKey')
    return new ProviderError(message, 'UnsupportedBroker', false, { cause: err });
  // Connection refused/closed, request timeouts, broker not found, metadata not loaded, retriable
  // protocol errors (NOT_CONTROLLER, LEADER_NOT_AVAILABLE, REQUEST_TIMED_OUT…) and exhausted retries.
  return new ProviderError(message, 'BrokerUnavailable', true, { cause: err });
}
