/** An outbox row as read back. */
export interface OutboxRow {
  id: string;
  tenant_id: string | null;
  type: string;
  subject: string;
  time: Date;
  data: unknown;
  correlation_id: string;
  stream: string;
  seq: number;
  txid: string;
  position: number;
}

/** A Tenantry event: CloudEvents 1.0, structured JSON mode. */
export interface TenantryCloudEvent {
  specversion: '1.0';
  id: string;
  source: string;
  type: string;
  subject: string;
  time: string;
  datacontenttype: 'application/json';
  /** Absent on platform events. */
  tenantid?: string;
  /** Position in the tenant's (or the platform's) stream, zero-padded so it sorts as text. */
  sequence: string;
  correlationid: string;
  data: unknown;
}

/** bigint has at most 19 digits; 20 keeps every sequence the same width. */
export const SEQUENCE_WIDTH = 20;
export const padSequence = (seq: number | string): string => String(seq).padStart(SEQUENCE_WIDTH, '0');

export function toCloudEvent(row: OutboxRow, source: string): TenantryCloudEvent {
  return {
    specversion: '1.0',
    id: row.id,
    source,
    type: row.type,
    subject: row.subject,
    time: row.time.toISOString(),
    datacontenttype: 'application/json',
    ...(row.tenant_id ? { tenantid: row.tenant_id } : {}),
    sequence: padSequence(row.seq),
    correlationid: row.correlation_id,
    data: row.data,
  };
}
