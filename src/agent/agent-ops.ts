import { type ProviderSet, slotFor } from '../controller/providers.js';
import { type DesiredResource, ProviderError } from '../providers/provider.js';
import type { StepInput, StepOutput } from '../tenant-migrations/dataplane-steps.js';
import {
  ISOLATION_DATAPLANE_STEPS,
  IsolationDataPlane,
  type IsolationStep,
} from '../tenant-migrations/isolation-dataplane.js';
import {
  type Opener,
  REGION_DATAPLANE_STEPS,
  RegionDataPlane,
  type RegionStep,
} from '../tenant-migrations/region-dataplane.js';

/** Resources to act on, as the control plane resolved them (one tenant's, of the agent's cell). */
interface ResourcesInput {
  tenantId: string;
  items: { desired: DesiredResource; region: string }[];
}

/** The steps `S` of data-plane class `T` as commands `<prefix>.<step>`. */
type StepOps<P extends string, T, S extends keyof T & string> = {
  [K in S as `${P}.${K}`]: { input: StepInput<T, K>; output: StepOutput<T, K> };
};
/** The data-plane steps of a tenancy-mode migration (src/tenant-migrations/isolation-dataplane.ts). */
type MigrationOps = StepOps<'migration', IsolationDataPlane, IsolationStep>;
/** One side of a region migration (src/tenant-migrations/region-dataplane.ts). */
type RegionOps = StepOps<'region', RegionDataPlane, RegionStep>;

/**
 * The data-plane work a control-plane workflow asks of a cell's agent (src/agent/agent-commands.ts),
 * by name, with its input and output. Each is safe to run twice.
 */
export interface AgentOps extends MigrationOps, RegionOps {
  /** Removes each resource with the agent's provider (its generated credentials go with it). */
  'resources.delete': {
    input: ResourcesInput;
    output: { removed: { id: string; provider: string | null }[]; secrets: string[] };
  };
  /** Which of the resources still exist (`type physicalName`). */
  'resources.observe': { input: ResourcesInput; output: { present: string[] } };
  /** Deletes whatever generated credentials of the tenant the agent still keeps. */
  'secrets.delete-tenant': { input: { tenantId: string }; output: { deleted: number } };
}
export type AgentOp = keyof AgentOps;
export type AgentOpInput<O extends AgentOp> = AgentOps[O]['input'];
export type AgentOpOutput<O extends AgentOp> = AgentOps[O]['output'];
export const AGENT_OPS: readonly AgentOp[] = [
  'resources.delete',
  'resources.observe',
  'secrets.delete-tenant',
  ...ISOLATION_DATAPLANE_STEPS.map((s) => `migration.${s}` as const),
  ...REGION_DATAPLANE_STEPS.map((s) => `region.${s}` as const),
];

/** The generated credentials an agent keeps (src/providers/postgres/secret-store.ts), per tenant. */
export interface TenantSecrets {
  refsOfTenant(tenantId: string): Promise<string[]>;
  deleteTenant(tenantId: string): Promise<number>;
}

/** What an agent runs commands with: its own providers and secret store, never the control plane's. */
export interface AgentOpEnv {
  providers: ProviderSet;
  secrets?: TenantSecrets;
  /** The data-plane PostgreSQL (TENANTRY_DATAPLANE_DATABASE_URL), for a migration's steps. */
  dataplaneUrl?: string;
  /** `host:port` at which another region's PostgreSQL reaches this data plane's (TENANTRY_DATAPLANE_PEER_ADDRESS). */
  peerAddress?: string;
  /** The agent's key (in its memory) and cell: what another region's side hands it is sealed for them. */
  opener?: Opener;
}

function dataplaneUrlOf(env: AgentOpEnv): string {
  const url = env.dataplaneUrl;
  if (!url)
    throw new ProviderError(
      "this agent has no data-plane PostgreSQL (TENANTRY_DATAPLANE_DATABASE_URL) to migrate a tenant's data in",
      'ProviderNotConfigured',
      false,
    );
  return url;
}

/** A migration's data-plane steps on this agent's data plane and database provider. */
function dataPlaneOf(env: AgentOpEnv): IsolationDataPlane {
  return new IsolationDataPlane({
    dataplaneUrl: dataplaneUrlOf(env),
    provider: () => {
      const slot = env.providers.database;
      if (!('provider' in slot)) throw new ProviderError(slot.missing, 'ProviderNotConfigured', false);
      return slot.provider;
    },
  });
}

const migrationHandlers = Object.fromEntries(
  ISOLATION_DATAPLANE_STEPS.map((s) => [
    `migration.${s}`,
    (env: AgentOpEnv, input: never) => {
      const dp = dataPlaneOf(env);
      return (dp[s] as (i: never) => Promise<unknown>).call(dp, input);
    },
  ]),
) as unknown as Pick<Handlers, keyof MigrationOps>;

/** A region migration's side on this agent's data plane: its region's providers are the agent's own. */
const regionHandlers = Object.fromEntries(
  REGION_DATAPLANE_STEPS.map((s) => [
    `region.${s}`,
    (env: AgentOpEnv, input: never) => {
      const dp = new RegionDataPlane({
        dataplaneUrl: () => dataplaneUrlOf(env),
        providers: env.providers,
        region: '',
        peerAddress: env.peerAddress,
        opener: async () => env.opener,
      });
      return (dp[s] as (i: never) => Promise<unknown>).call(dp, input);
    },
  ]),
) as unknown as Pick<Handlers, keyof RegionOps>;

const providerOf = (env: AgentOpEnv, type: DesiredResource['type'], region: string) => {
  const slot = slotFor(env.providers, type, region);
  return 'provider' in slot ? slot.provider : undefined;
};

type Handlers = { [O in AgentOp]: (env: AgentOpEnv, input: AgentOpInput<O>) => Promise<AgentOpOutput<O>> };

const handlers: Handlers = {
  ...migrationHandlers,
  ...regionHandlers,
  async 'resources.delete'(env, input) {
    const secrets = (await env.secrets?.refsOfTenant(input.tenantId)) ?? [];
    const removed: { id: string; provider: string | null }[] = [];
    for (const { desired, region } of input.items) {
      const p = providerOf(env, desired.type, region);
      if (p) await p.delete(desired);
      removed.push({ id: desired.id, provider: p?.name ?? null });
    }
    return { removed, secrets };
  },
  async 'resources.observe'(env, input) {
    const present: string[] = [];
    for (const { desired, region } of input.items) {
      const p = providerOf(env, desired.type, region);
      if (p && (await p.observe(desired)).exists) present.push(`${desired.type} ${desired.physicalName}`);
    }
    return { present };
  },
  async 'secrets.delete-tenant'(env, input) {
    return { deleted: (await env.secrets?.deleteTenant(input.tenantId)) ?? 0 };
  },
};

/** Runs one command in the agent; an op it does not know is refused (the control plane is newer). */
export function runAgentOp(env: AgentOpEnv, op: string, input: unknown): Promise<unknown> {
  if (!(AGENT_OPS as readonly string[]).includes(op))
    return Promise.reject(new Error(`this agent does not know the command "${op}"`));
  return (handlers[op as AgentOp] as (env: AgentOpEnv, input: unknown) => Promise<unknown>)(env, input);
}
