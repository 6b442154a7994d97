import type { Migration, MigrationProvider } from 'kysely';
import type { KeyProvider } from '../../secrets/key-provider.js';
import * as m0001 from './0001-registry.js';
import * as m0002 from './0002-audit-chain.js';
import * as m0003 from './0003-idempotency-keys.js';
import * as m0004 from './0004-identity.js';
import * as m0005 from './0005-controller.js';
import * as m0006 from './0006-events-webhooks.js';
import * as m0007 from './0007-placement-quotas.js';
import * as m0008 from './0008-request-log.js';
import * as m0009 from './0009-trace-context.js';
import * as m0012 from './0012-idempotency-scope.js';
import * as m0013 from './0013-platform-role.js';
import * as m0014 from './0014-audit-transparency.js';
import * as m0015 from './0015-workflows.js';
import * as m0016 from './0016-workflow-freezes.js';
import * as m0017 from './0017-tenant-retention.js';
import * as m0018 from './0018-service-clients.js';
import { secretsAtRest } from './0019-secrets-at-rest.js';
import * as m0020 from './0020-tenant-scope-binding.js';
import * as m0023 from './0023-audit-sequencer.js';
import * as m0024 from './0024-audit-pruned-leaves.js';
import * as m0025 from './0025-tenant-migrations.js';
import * as m0027 from './0027-runtime-inventory.js';
import * as m0029 from './0029-releases.js';
import * as m0031 from './0031-cell-agents.js';
import * as m0032 from './0032-purge-exceptions.js';
import * as m0034 from './0034-audit-cosignatures.js';
import * as m0036 from './0036-scoped-read.js';
import * as m0038 from './0038-console-sign-in-codes.js';
import * as m0039 from './0039-region-migrations.js';
import * as m0043 from './0043-cell-agent-commands.js';
import * as m0044 from './0044-audit-hot-paths.js';
import * as m0045 from './0045-event-sequence-at-commit.js';
import * as m0047 from './0047-identity-invalidation.js';
import * as m0050 from './0050-cell-agent-version.js';
import * as m0051 from './0051-audit-positions.js';
import * as m0053 from './0053-region-standbys.js';
import * as m0057 from './0057-object-invalidation.js';
import * as m0058 from './0058-event-numbering-one-statement.js';
import * as m0063 from './0063-object-invalidation-static.js';
import * as m0066 from './0066-audit-append-one-statement.js';
import * as m0067 from './0067-event-numbering-one-event.js';
import * as m0068 from './0068-object-invalidation-columns.js';
import * as m0069 from './0069-status-hot-updates.js';
import * as m0071 from './0071-agent-command-key.js';
import * as m0074 from './0074-event-numbering-one-statement-each.js';

/**
 * Forward-only, numbered. Add new files at the end; never edit one that has shipped.
 * `keys`: the key-encryption key, for the migrations that seal secrets stored in clear (0019).
 */
const migrationsWith = (keys: KeyProvider | undefined): Record<string, Migration> => ({
  '0001-registry': m0001,
  '0002-audit-chain': m0002,
  '0003-idempotency-keys': m0003,
  '0004-identity': m0004,
  '0005-controller': m0005,
  '0006-events-webhooks': m0006,
  '0007-placement-quotas': m0007,
  '0008-request-log': m0008,
  '0009-trace-context': m0009,
  '0012-idempotency-scope': m0012,
  '0013-platform-role': m0013,
  '0014-audit-transparency': m0014,
  '0015-workflows': m0015,
  '0016-workflow-freezes': m0016,
  '0017-tenant-retention': m0017,
  '0018-service-clients': m0018,
  '0019-secrets-at-rest': secretsAtRest(keys),
  '0020-tenant-scope-binding': m0020,
  '0023-audit-sequencer': m0023,
  '0024-audit-pruned-leaves': m0024,
  '0025-tenant-migrations': m0025,
  '0027-runtime-inventory': m0027,
  '0029-releases': m0029,
  '0031-cell-agents': m0031,
  '0032-purge-exceptions': m0032,
  '0034-audit-cosignatures': m0034,
  '0036-scoped-read': m0036,
  '0038-console-sign-in-codes': m0038,
  '0039-region-migrations': m0039,
  '0043-cell-agent-commands': m0043,
  '0044-audit-hot-paths': m0044,
  '0045-event-sequence-at-commit': m0045,
  '0047-identity-invalidation': m0047,
  '0050-cell-agent-version': m0050,
  '0051-audit-positions': m0051,
  '0053-region-standbys': m0053,
  '0057-object-invalidation': m0057,
  '0058-event-numbering-one-statement': m0058,
  '0063-object-invalidation-static': m0063,
  '0066-audit-append-one-statement': m0066,
  '0067-event-numbering-one-event': m0067,
  '0068-object-invalidation-columns': m0068,
  '0069-status-hot-updates': m0069,
  '0071-agent-command-key': m0071,
  '0074-event-numbering-one-statement-each': m0074,
});

/** The migrations of a process that holds the key-encryption key. */
export const migrationProviderWith = (keys: KeyProvider | undefined): MigrationProvider => ({
  getMigrations: async () => migrationsWith(keys),
});

/** The migrations without a key-encryption key (a database with no secret in clear, or a count). */
export const migrationProvider: MigrationProvider = migrationProviderWith(undefined);
