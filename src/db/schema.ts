import type { ColumnType, Generated, Selectable } from 'kysely';

/** Row types: snake_case, exactly as stored. Domain types live with their domain. */
type Json = ColumnType<unknown, string, string>;
type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>;

interface ObjectColumns {
  id: string;
  slug: string;
  spec: Json;
  labels: ColumnType<Record<string, string>, string | undefined, string>;
  generation: ColumnType<number, number | undefined, number | string>;
  lifecycle: Generated<string>;
  phase: Generated<string>;
  observed_generation: ColumnType<number, number | undefined, number | string>;
  conditions: ColumnType<unknown, string | undefined, string>;
  created_at: Timestamp;
  updated_at: Timestamp;
  deleted_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

export interface CustomerTable extends ObjectColumns {
  short_code: string;
}
export interface SystemTable extends ObjectColumns {
  service_id: string;
}
export interface TenantTable extends ObjectColumns {
  customer_id: string;
  region: string;
  environment_type: string;
  qualifier: string | null;
  /** Its cell (src/placement), null while unplaced. */
  cell_id: string | null;
  placement: ColumnType<unknown, string | null | undefined, string | null>;
}
export interface DeploymentTable extends ObjectColumns {
  tenant_id: string;
  system_id: string;
  qualifier: string | null;
}
export interface IntegrationResourceTable extends ObjectColumns {
  tenant_id: string;
  deployment_id: string | null;
  scope: 'tenant' | 'deployment';
  resource_type: string;
  physical_name: string;
}

/** Runtime inventory (issue 20, migration 0027). */
export interface ServiceTable extends ObjectColumns {
  tenant_id: string;
  deployment_id: string;
  component: string;
  observed: ColumnType<unknown, string | null | undefined, string | null>;
}
export interface ScalingPolicyTable extends ObjectColumns {
  tenant_id: string;
  service_id: string;
}
export interface ConfigurationTable extends ObjectColumns {
  tenant_id: string;
  config_name: string;
  version: number;
  checksum: string;
  version_state: Generated<'draft' | 'active' | 'superseded'>;
}
export interface DriftFindingTable {
  tenant_id: string;
  id: Generated<string>;
  object_kind: string;
  object_id: string;
  object_slug: string;
  drift: Json;
  opened_at: Generated<Date>;
  resolved_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  resolved_by: string | null;
}

export interface ObjectVersionTable {
  id: Generated<string>;
  tenant_id: string | null;
  object_kind: string;
  object_id: string;
  generation: ColumnType<number, number, never>;
  action: string;
  slug: string;
  state: Json;
  changes: Json;
  actor: Json;
  request_id: string;
  correlation_id: string;
  created_at: Timestamp;
}

export interface AuditRecordTable {
  id: string;
  time: Timestamp;
  tenant_id: string | null;
  app_id: string | null;
  actor_principal: string;
  actor_kind: string;
  session_id: string | null;
  action: string;
  target_kind: string;
  target_id: string | null;
  target_slug: string | null;
  before: Json;
  after: Json;
  outcome: 'success' | 'failure' | 'denied';
  decision: Json;
  request_id: string;
  correlation_id: string;
  /** The tenant id, or 'platform'. */
  chain: string;
}

/**
 * Table audit_positions: a record's place in its chain, written once by the sequencer
 * (src/audit/audit-sequencer.ts); a record without one is still queued in audit_queue.
 */
export interface AuditPositionTable {
  chain: string;
  seq: ColumnType<number, number, never>;
  record_id: string;
  prev_hash: string;
  hash: string;
}

/** Table audit_queue: the records written but not yet positioned, oldest first. */
export interface AuditQueueTable {
  time: Timestamp;
  record_id: string;
  chain: string;
}

export interface AuditChainHeadTable {
  chain: string;
  seq: ColumnType<number, number, number>;
  hash: string;
  updated_at: Timestamp;
}

export interface AuditCheckpointTable {
  id: string;
  time: Timestamp;
  heads: Json;
  signature: string;
  key_id: string;
}

export interface AuditRetentionTable {
  id: string;
  time: Timestamp;
  chain: string;
  through_seq: ColumnType<number, number, never>;
  through_hash: string;
  checkpoint_id: string;
  deleted: ColumnType<number, number, never>;
}

/** The operator's retention floor (one row; migration 0014). */
export interface AuditRetentionPolicyTable {
  singleton: Generated<boolean>;
  min_age: Generated<string>;
}

/** Chains that retention must keep (migration 0014); append-only, a hold ends at `until`. */
export interface AuditLegalHoldTable {
  id: Generated<string>;
  chain: string;
  reason: string;
  created_at: Generated<Timestamp>;
  until: Timestamp | null;
}

export interface OutboxEventTable {
  id: string;
  tenant_id: string | null;
  type: string;
  subject: string;
  time: Timestamp;
  data: Json;
  correlation_id: string;
  published_at: ColumnType<Date | null, never, Date>;
  /** The tenant's UUID or 'platform' (generated). */
  stream: ColumnType<string, never, never>;
  /** Gap-free per stream, assigned at commit (migration 0045, src/events/append-event.ts): never null once committed. */
  seq: ColumnType<number, never, never>;
  txid: ColumnType<string, never, never>;
  position: ColumnType<number, never, never>;
  /** W3C trace context of the change (0009). */
  traceparent: string | null;
}

export interface EventSequenceTable {
  stream: string;
  seq: ColumnType<number, number, number>;
}

export interface WebhookEndpointTable extends ObjectColumns {
  tenant_id: string | null;
  name: string;
  /** [{ secret, fingerprint, notAfter }]: never leaves this table except as a fingerprint. */
  secrets: Json;
}

export interface WebhookDeliveryTable {
  id: Generated<string>;
  tenant_id: string | null;
  endpoint_id: string;
  event_id: string;
  stream: string;
  seq: ColumnType<number, number, never>;
  status: Generated<'pending' | 'delivered' | 'dead'>;
  attempts: Generated<number>;
  trigger: Generated<'scheduled' | 'manual'>;
  next_attempt_at: Timestamp;
  locked_by: string | null;
  locked_until: ColumnType<Date | null, Date | null | undefined, Date | null>;
  last_status: number | null;
  last_error: string | null;
  created_at: Timestamp;
  updated_at: Timestamp;
}

export interface WebhookAttemptTable {
  id: Generated<string>;
  tenant_id: string | null;
  delivery_id: string;
  endpoint_id: string;
  event_id: string;
  attempt: number;
  trigger: 'scheduled' | 'manual';
  status_code: number | null;
  latency_ms: number;
  response_excerpt: string | null;
  error: string | null;
  started_at: Timestamp;
}

export interface ReconcileJobTable {
  object_kind: string;
  object_id: string;
  tenant_id: string | null;
  generation: ColumnType<number, number, number>;
  run_after: Timestamp;
  attempts: Generated<number>;
  locked_by: string | null;
  locked_until: ColumnType<Date | null, Date | null | undefined, Date | null>;
  last_error: string | null;
  created_at: Timestamp;
  updated_at: Timestamp;
  /** Bumped by every enqueue; a worker compares it to tell whether the object changed meanwhile. */
  ticket: ColumnType<number, number | undefined, number>;
  /** W3C trace context of the change that enqueued it (0009). */
  traceparent: string | null;
}

export interface ResourceSecretTable {
  tenant_id: string;
  resource_id: string;
  name: string;
  /** The credentials (JSON), sealed by src/secrets (0019). */
  sealed: string;
  created_at: Timestamp;
}

/** The key that proves tenant scopes (0020): owner and platform role only. */
export interface TenantryScopeKeyTable {
  id: number;
  key: Buffer;
  ipad: Buffer;
  opad: Buffer;
}

/** Which tenant each backend's current transaction entered (0020); written only by tenantry_enter_tenant. */
export interface TenantryScopeBindingTable {
  pid: number;
  xact: string;
  tenant_id: string;
}

/** A tenant's data key (tenant null: platform-wide secrets), wrapped by a KEK (0019). */
export interface DataKeyTable {
  id: string;
  tenant_id: string | null;
  key_id: string;
  wrapped: Buffer;
  created_at: Generated<Timestamp>;
  rewrapped_at: Timestamp | null;
  retired_at: Timestamp | null;
}

export interface IdempotencyKeyTable {
  issuer: string;
  principal: string;
  app_id: string;
  /** The caller's tenant UUID, or 'platform'. */
  scope: string;
  tenant_id: string | null;
  method: string;
  path: string;
  key: string;
  request_hash: string;
  status_code: number | null;
  response: ColumnType<unknown, string | null | undefined, string | null>;
  created_at: Timestamp;
  expires_at: ColumnType<Date, Date | string, Date | string>;
}

export interface RequestLogTable {
  id: Generated<string>;
  time: Date;
  tenant_id: string;
  method: string;
  route: string;
  status: number;
  duration_ms: number;
  correlation_id: string;
}

export interface SessionTable {
  id: string;
  issuer: string;
  app_id: string;
  tenant_id: string | null;
  principal: string;
  created_at: Timestamp;
  expires_at: Timestamp;
  revoked_at: ColumnType<Date | null, Date | null | undefined, Date | string | null>;
  revoked_by: string | null;
}

export interface BreakGlassGrantTable {
  tenant_id: string | null;
  id: string;
  issuer: string;
  principal: string;
  roles: string[];
  reason: string;
  created_at: Timestamp;
  expires_at: Timestamp;
  ended_at: ColumnType<Date | null, Date | null | undefined, Date | string | null>;
  ended_by: string | null;
}

// Placement (0007): regions, cells and plans are registry kinds; usage, overrides and rate limits per tenant.
export type RegionTable = ObjectColumns;
export interface CellTable extends ObjectColumns {
  region: string;
  stage: string;
  tenancy: 'shared' | 'dedicated';
  /** How many tenants the cell hosts. */
  allocated: Generated<number>;
}
export type PlanTable = ObjectColumns;
/** Releases and pipelines (issue 21, src/releases); their other tables are read with plain SQL there. */
export type PipelineTable = ObjectColumns;
export interface ReleaseTable extends ObjectColumns {
  system_id: string;
  version: string;
}
/** The orchestrator's tables (src/workflows; read and written with plain SQL there). */
export interface WorkflowTable {
  id: string;
  tenant_id: string;
  type: string;
  state: string;
  input: Json;
  actor: Json;
  request_id: string;
  correlation_id: string;
  error: string | null;
  attempts: number;
  cancel_requested: Json;
  run_after: Timestamp;
  locked_by: string | null;
  locked_until: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  created_at: Timestamp;
  updated_at: Timestamp;
  finished_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}
export interface WorkflowStepTable {
  tenant_id: string;
  workflow_id: string;
  position: number;
  name: string;
  state: string;
  attempts: number;
  output: Json;
  error: string | null;
  started_at: Timestamp;
  ended_at: Timestamp;
}
export interface TenantSuspensionTable {
  tenant_id: string;
  workflow_id: string;
  taken: Json;
  webhooks_held: boolean;
  created_at: Timestamp;
}
export interface WorkflowFreezeTable {
  name: string;
  scope: string;
  target: string | null;
  allow: string[];
  reason: string;
  starts_at: Timestamp;
  ends_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  created_by: Json;
  created_at: Timestamp;
  lifted_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}
export interface DeploymentReleaseTable {
  tenant_id: string;
  deployment_id: string;
  system_id: string;
  version: string;
  previous_version: string | null;
  promotion_id: string | null;
  updated_at: Timestamp;
}
export interface ReleasePinTable {
  tenant_id: string;
  system_id: string;
  version: string;
  reason: string;
  until: Timestamp;
  created_by: Json;
  created_at: Timestamp;
}
export interface MaintenanceWindowTable {
  tenant_id: string;
  name: string;
  starts_at: Timestamp;
  ends_at: Timestamp;
  reason: string;
  created_by: Json;
  created_at: Timestamp;
}
export interface DeploymentHealthTable {
  tenant_id: string;
  deployment_id: string;
  version: string;
  ready_replicas: number;
  desired_replicas: number;
  error_rate: number;
  reported_at: Timestamp;
}
export interface PromotionTable {
  id: string;
  system_id: string;
  release_id: string;
  version: string;
  pipeline_id: string;
  stage: string;
  stage_spec: Json;
  mode: 'promote' | 'rollback';
  state: string;
  requested_by: Json;
  author: string | null;
  required_approvals: number;
  approvals: Json;
  gates: Json;
  progress: Json;
  error: string | null;
  request_id: string;
  correlation_id: string;
  created_at: Timestamp;
  updated_at: Timestamp;
  finished_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}
export interface PromotionTargetTable {
  promotion_id: string;
  tenant_id: string;
  deployment_id: string;
  wave: number;
  state: string;
  reason: string | null;
  from_version: string | null;
  to_version: string;
  deferred_until: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  updated_at: Timestamp;
}

export interface TenantUsageTable {
  tenant_id: string;
  storage_bytes: ColumnType<number, number | undefined, number>;
  version: ColumnType<number, number | undefined, number>;
  updated_at: Timestamp;
}

export interface UsageHistoryTable {
  tenant_id: string;
  version: ColumnType<number, number, never>;
  time: Timestamp;
  reason: string;
  plan: string | null;
  usage: Json;
  limits: Json;
  request_id: string;
}

export interface LimitOverrideTable {
  tenant_id: string;
  id: string;
  name: string;
  value: number;
  reason: string;
  created_by: string;
  created_at: Timestamp;
  expires_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  revoked_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

/** GCRA state per tenant and request class (src/ratelimit): the theoretical arrival time. */
export interface RateLimitBucketTable {
  tenant_id: string;
  class: string;
  tat: Timestamp;
}

/** Table audit_pruned_leaves. */
export interface AuditPrunedLeavesTable {
  chain: string;
  seq: ColumnType<string, string | number | bigint, string | number | bigint>;
  hash: string;
}
/** Table audit_trees. */
export interface AuditTreesTable {
  chain: string;
  size: ColumnType<string, string | number | bigint, string | number | bigint>;
  peaks: string[];
}
/** Table audit_publications. */
export interface AuditPublicationsTable {
  chain: string;
  published_size: ColumnType<string, string | number | bigint, string | number | bigint>;
  published_at: ColumnType<Date, Date | string, Date | string>;
}
/** Table cell_agents. */
export interface CellAgentsTable {
  cell_id: string;
  session_id: string;
  name: string;
  embedded: Generated<boolean>;
  joined_at: Timestamp;
  credential_expires_at: Timestamp;
  heartbeat_interval_ms: number;
  last_heartbeat_at: Timestamp;
  connection: Generated<string>;
  connection_since: Timestamp;
  feed_generation: Generated<string>;
  feed_hash: Generated<string>;
  revoked_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  revoked_by: string | null;
  /** The version the agent says it runs (its User-Agent at its last heartbeat). */
  version: string | null;
  /** The public half of the agent's key of the moment (x of an X25519 JWK), said with its command requests. */
  command_key: string | null;
}
/** Table cell_join_tokens. */
export interface CellJoinTokensTable {
  id: string;
  cell_id: string;
  token_hash: string;
  created_by: string;
  created_at: Timestamp;
  expires_at: Timestamp;
  used_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  embedded: Generated<boolean>;
}
/** Table console_sign_in_codes (src/console/console-session.ts). */
export interface ConsoleSignInCodesTable {
  code_hash: string;
  created_at: Timestamp;
  expires_at: Timestamp;
  used_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}
/** Table audit_cosignatures (migration 0034; src/audit/cosignature.ts): witnesses' cosignatures, append-only. */
export interface AuditCosignaturesTable {
  chain: string;
  size: ColumnType<string, number | string, never>;
  root_hash: string;
  witness: string;
  cosignature: string;
  created_at: Timestamp;
}
/** Table cell_agent_commands (migration 0043; src/agent/agent-commands.ts): data-plane work an agent pulls. */
export interface CellAgentCommandsTable {
  id: string;
  cell_id: string;
  key: string;
  op: string;
  input: Json;
  state: 'Pending' | 'Running' | 'Succeeded' | 'Failed';
  attempts: Generated<number>;
  result: Json | null;
  error: Json | null;
  created_at: Timestamp;
  claimed_at: Timestamp | null;
  completed_at: Timestamp | null;
}
/** Table purge_exceptions (migration 0032): governance exceptions to the retention window, four eyes. */
export interface PurgeExceptionsTable {
  id: Generated<string>;
  tenant_id: string;
  reason: string;
  requested_by: Json;
  requested_at: Timestamp;
  approved_by: Json | null;
  approved_at: Timestamp | null;
  used_by_workflow: string | null;
  used_at: Timestamp | null;
}
/** Table legal_holds. */
export interface LegalHoldsTable {
  id: Generated<string>;
  tenant_id: string;
  reason: string;
  placed_by: Json;
  placed_at: Timestamp;
  released_by: Json | null;
  released_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  release_reason: string | null;
}
/** Table service_clients. */
export interface ServiceClientsTable {
  client_id: string;
  tenant_id: string;
  secret: string;
  roles: string[];
  workflow_id: string | null;
  created_at: Timestamp;
  revoked_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}
/** Table tenant_migrations. */
export interface TenantMigrationsTable {
  id: string;
  tenant_id: string;
  kind: string;
  state: Generated<string>;
  source: Json;
  target: Json;
  plan: Json;
  mode: string | null;
  verification: Json | null;
  writes_frozen: Generated<boolean>;
  freeze_started_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  freeze_ended_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  freeze_ms: number | null;
  cut_over_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  rollback_window_seconds: number;
  rollback_until: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  rollback_workflow_id: string | null;
  rollback_verification: Json | null;
  rolled_back_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  retired_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  error: string | null;
  actor: Json;
  created_at: Timestamp;
  updated_at: Timestamp;
}
/** Table tenant_standbys. */
export interface TenantStandbysTable {
  tenant_id: string;
  region: string;
  state: Generated<string>;
  workflow_id: string | null;
  plan: Generated<Json>;
  lag_bytes: string | null;
  measured_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  caught_up_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  last_known: Json | null;
  blobs: Json | null;
  unreachable_checks: Generated<number>;
  error: string | null;
  created_at: Timestamp;
  updated_at: Timestamp;
}
/** Table tenant_failovers. */
export interface TenantFailoversTable {
  id: string;
  tenant_id: string;
  from_region: string;
  to_region: string;
  state: Generated<string>;
  reason: string;
  source: Json;
  target: Json;
  standby: Json;
  plan: Json | null;
  consistency: Json | null;
  failed_over_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  fenced_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  fence: Json | null;
  error: string | null;
  actor: Json;
  created_at: Timestamp;
  updated_at: Timestamp;
}
/** Table tenant_retention. */
export interface TenantRetentionTable {
  tenant_id: string;
  started_at: Timestamp;
  windows: Json;
  resources_purge_after: Timestamp;
  purged_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  purge_workflow_id: string | null;
}

export interface Database {
  customers: CustomerTable;
  systems: SystemTable;
  tenants: TenantTable;
  deployments: DeploymentTable;
  integration_resources: IntegrationResourceTable;
  services: ServiceTable;
  scaling_policies: ScalingPolicyTable;
  configurations: ConfigurationTable;
  drift_findings: DriftFindingTable;
  object_versions: ObjectVersionTable;
  audit_records: AuditRecordTable;
  audit_positions: AuditPositionTable;
  audit_queue: AuditQueueTable;
  audit_chain_heads: AuditChainHeadTable;
  audit_checkpoints: AuditCheckpointTable;
  audit_retention: AuditRetentionTable;
  audit_retention_policy: AuditRetentionPolicyTable;
  audit_legal_holds: AuditLegalHoldTable;
  outbox_events: OutboxEventTable;
  reconcile_jobs: ReconcileJobTable;
  idempotency_keys: IdempotencyKeyTable;
  request_log: RequestLogTable;
  sessions: SessionTable;
  break_glass_grants: BreakGlassGrantTable;
  resource_secrets: ResourceSecretTable;
  data_keys: DataKeyTable;
  tenantry_scope_key: TenantryScopeKeyTable;
  tenantry_scope_bindings: TenantryScopeBindingTable;
  event_sequences: EventSequenceTable;
  webhook_endpoints: WebhookEndpointTable;
  webhook_deliveries: WebhookDeliveryTable;
  webhook_attempts: WebhookAttemptTable;
  regions: RegionTable;
  cells: CellTable;
  plans: PlanTable;
  workflows: WorkflowTable;
  workflow_steps: WorkflowStepTable;
  tenant_suspensions: TenantSuspensionTable;
  workflow_freezes: WorkflowFreezeTable;
  pipelines: PipelineTable;
  releases: ReleaseTable;
  deployment_releases: DeploymentReleaseTable;
  release_pins: ReleasePinTable;
  maintenance_windows: MaintenanceWindowTable;
  deployment_health: DeploymentHealthTable;
  promotions: PromotionTable;
  promotion_targets: PromotionTargetTable;
  tenant_usage: TenantUsageTable;
  usage_history: UsageHistoryTable;
  limit_overrides: LimitOverrideTable;
  rate_limit_buckets: RateLimitBucketTable;
  audit_pruned_leaves: AuditPrunedLeavesTable;
  audit_trees: AuditTreesTable;
  audit_publications: AuditPublicationsTable;
  audit_cosignatures: AuditCosignaturesTable;
  cell_agents: CellAgentsTable;
  cell_agent_commands: CellAgentCommandsTable;
  cell_join_tokens: CellJoinTokensTable;
  console_sign_in_codes: ConsoleSignInCodesTable;
  legal_holds: LegalHoldsTable;
  purge_exceptions: PurgeExceptionsTable;
  service_clients: ServiceClientsTable;
  tenant_migrations: TenantMigrationsTable;
  tenant_standbys: TenantStandbysTable;
  tenant_failovers: TenantFailoversTable;
  tenant_retention: TenantRetentionTable;
}

export type SessionRow = Selectable<SessionTable>;
export type BreakGlassGrantRow = Selectable<BreakGlassGrantTable>;
