import { type Static, Type } from '@sinclair/typebox';
import { integerSetting } from './settings.js';

/** Cell agents (src/agent): the control plane's side of the data-plane split. */
export const AgentConfigSchema = Type.Object({
  heartbeatIntervalMs: Type.Integer({
    minimum: 1,
    description: 'How often an agent renews its lease; after 5 missed intervals its cell shows Unknown.',
  }),
  credentialTtlSeconds: Type.Integer({
    minimum: 1,
    description: 'Lifetime of an agent credential; the agent rotates it after two thirds of it.',
  }),
  joinTokenTtlSeconds: Type.Integer({ minimum: 1, description: 'Default lifetime of a join token.' }),
  feedPollMs: Type.Integer({
    minimum: 1,
    description:
      'How often a waiting desired-state request looks for a change of its cell (besides waking on every event).',
  }),
  embedded: Type.Boolean({
    description:
      'role all: run an agent in this process (over loopback) for every cell no other agent joined.',
  }),
});
export type AgentConfig = Static<typeof AgentConfigSchema>;

export function parseAgentConfig(env: NodeJS.ProcessEnv): AgentConfig {
  return {
    heartbeatIntervalMs: integerSetting(
      'TENANTRY_AGENT_HEARTBEAT_MS',
      env.TENANTRY_AGENT_HEARTBEAT_MS,
      10_000,
    ),
    credentialTtlSeconds: integerSetting(
      'TENANTRY_AGENT_CREDENTIAL_TTL_SECONDS',
      env.TENANTRY_AGENT_CREDENTIAL_TTL_SECONDS,
      3600,
    ),
    joinTokenTtlSeconds: integerSetting(
      'TENANTRY_AGENT_JOIN_TOKEN_TTL_SECONDS',
      env.TENANTRY_AGENT_JOIN_TOKEN_TTL_SECONDS,
      900,
    ),
    feedPollMs: integerSetting('TENANTRY_AGENT_FEED_POLL_MS', env.TENANTRY_AGENT_FEED_POLL_MS, 2_000),
    embedded: env.TENANTRY_EMBEDDED_AGENT !== 'false' && env.TENANTRY_EMBEDDED_AGENT !== '0',
  };
}
