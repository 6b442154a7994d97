/**
 * The audit domain's surface for the composition root, the CLI (`tenantry audit verify|search|export`)
 * and the API (`GET /v1/audit/verify`, `GET /v1/audit`).
 */
export {
  type AppendedAudit,
  type AttemptContext,
  type AuditAttempt,
  type AuditEntry,
  appendAudit,
  appendAuditAlone,
  appendAudits,
  prepareAuditAppend,
  prepareAuditAppends,
  recordAuditAttempt,
} from './append-audit.js';
export {
  type AuditCheckpoint,
  AuditCheckpointer,
  createAuditCheckpoint,
} from './audit-checkpoint.js';
export { type AuditOutcome, type AuditRecord, GENESIS_HASH, PLATFORM_CHAIN } from './audit-hash.js';
export { applyAuditRetention, type RetentionResult, type RetentionSegment } from './audit-retention.js';
export {
  AuditSequencer,
  type AuditSequencerOptions,
  type IntegratedBatch,
  integrateAudit,
  integrateAuditBatch,
} from './audit-sequencer.js';
export type { AuditProblem, AuditProblemCode, AuditVerification, ChainReport } from './audit-verifier.js';
export { CheckpointPublisher, type PublishedCheckpoint, publishCheckpoints } from './checkpoint-events.js';
export { AuditSigner, defaultSigningKeyFile, keyIdOf, loadAuditSigner } from './checkpoint-signer.js';
export {
  type CosignedCheckpoint,
  openCosignedCheckpoint,
  parseWitnessVerifierKey,
  type Witness,
  witnessVerifierKey,
} from './cosignature.js';
export {
  type AuditExportSummary,
  EXPORT_FORMAT,
  type ExportAuditOptions,
  exportAudit,
  type OfflineVerification,
  verifyAuditExport,
} from './export-audit.js';
export { type AuditPage, type AuditSearchQuery, searchAudit } from './search-audit.js';
export { type VerifyAuditOptions, verifyAudit } from './verify-audit.js';
export {
  type CosignedTreeHead,
  cosignCheckpoint,
  cosignedCheckpoint,
  parseWitnessEndpoint,
  type WitnessEndpoint,
  type WitnessOutcome,
  WitnessSubmitter,
} from './witness-cosigning.js';
