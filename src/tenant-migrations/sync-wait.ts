import { ProviderError } from '../providers/provider.js';

/**
 * Failed attempts of a subscription's workers, during one wait, that end it as a retryable
 * `SubscriptionFailing` (PostgreSQL restarts a failed worker after `wal_retrieve_retry_interval`,
 * 5 s: about half a minute of failing).
 */
export const SUBSCRIPTION_FAILURES = 6;

/** The lag (bytes) under which a migration's stream counts as caught up: the freeze waits for the rest. */
export const MAX_LAG_BYTES = 16 * 1024 * 1024;

/** How a wait looks at one subscription and its publisher, wherever they run (pg-copy.ts reads each). */
export interface SyncProbe {
  /** On the subscriber: tables still in their initial copy, and its workers' failed attempts so far. */
  syncing(): Promise<{ left: number; syncErrors: number; applyErrors: number }>;
  /** On the publisher: the slot's lag in bytes. */
  lagBytes(): Promise<number | null>;
  /** On the publisher: what the role the subscription connects as lacks (readerLacks), asked once it fails. */
  readerLacks(): Promise<string[]>;
}

export interface SyncWaitOptions {
  /** For the failure's message: the subscription (`the subscription s in us`), its reader (`its reader in eu`), and whose log says more. */
  subscription: string;
  reader: string;
  log: string;
  /** Synced also needs the lag under this many bytes; absent: the initial copy done is enough. */
  maxLagBytes?: number;
  /** A time (ms since the epoch) after which the wait answers `synced: false`. */
  until?: number;
  /** Aborted: the wait fails as a retryable `NotSynced`. */
  signal?: AbortSignal;
  /** Failed attempts counted before, by an earlier wait of the same run; absent: the first look's. */
  errorsSeen?: number;
}

export interface SyncWaitResult {
  synced: boolean;
  lagBytes: number | null;
  /** What `errorsSeen` a following wait of the same run continues from. */
  errorsSeen: number;
}

/**
 * Waits until the subscription's initial copy is done (and, with `maxLagBytes`, its stream caught
 * up). PostgreSQL restarts a failing table-sync or apply worker and says why in its log only: after
 * SUBSCRIPTION_FAILURES failures during the wait, it fails with what can be seen of the cause (what
 * the reader lacks, or where the log is); a retry starts counting again.
 */
export async function waitSynced(probe: SyncProbe, o: SyncWaitOptions): Promise<SyncWaitResult> {
  let seen = o.errorsSeen;
  for (;;) {
    const { left, syncErrors, applyErrors } = await probe.syncing();
    const lagBytes = await probe.lagBytes();
    seen ??= syncErrors + applyErrors;
    if (left === 0 && (o.maxLagBytes === undefined || (lagBytes ?? 0) < o.maxLagBytes))
      return { synced: true, lagBytes, errorsSeen: seen };
    if (syncErrors + applyErrors - seen >= SUBSCRIPTION_FAILURES) {
      const lacks = await probe.readerLacks();
      throw new ProviderError(
        `${o.subscription} keeps failing (${syncErrors} table sync and ${applyErrors} apply errors): ${
          lacks.length > 0 ? `${o.reader} lacks ${lacks.join(', ')}` : `see the log of ${o.log}`
        }`,
        'SubscriptionFailing',
        true,
      );
    }
    if (o.signal?.aborted) throw new ProviderError('the initial copy is not done in time', 'NotSynced', true);
    if (o.until !== undefined && Date.now() > o.until) return { synced: false, lagBytes, errorsSeen: seen };
    await new Promise((res) => setTimeout(res, 200));
  }
}
