import type pg from 'pg';

/**
 * PostgreSQL errors that mean "the database is not reachable right now", not "the request is
 * wrong": the server is shutting down or starting (57P01-57P03), the connection broke or could not
 * be made (class 08, socket errors, pg's own messages for a dropped connection or a connect timeout).
 */
const UNAVAILABLE_SQLSTATES = new Set([
  '57P01',
  '57P02',
  '57P03',
  '08000',
  '08001',
  '08003',
  '08004',
  '08006',
]);
const UNAVAILABLE_SOCKET = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
]);
const UNAVAILABLE_MESSAGES = [
  'Connection terminated',
  'timeout exceeded when trying to connect',
  'Client has encountered a connection error and is not queryable',
  'Client was closed and is not queryable',
  'the database system is',
];

/** True when err (or anything in its cause chain) says the database is unreachable. */
export function isDatabaseUnavailable(err: unknown): boolean {
  for (let e = err, depth = 0; e && depth < 8; e = (e as { cause?: unknown }).cause, depth++) {
    if (e instanceof AggregateError && e.errors.some(isDatabaseUnavailable)) return true;
    const { code, message } = e as { code?: unknown; message?: unknown };
    if (typeof code === 'string' && (UNAVAILABLE_SQLSTATES.has(code) || UNAVAILABLE_SOCKET.has(code)))
      return true;
    if (typeof message === 'string' && UNAVAILABLE_MESSAGES.some((m) => message.includes(m))) return true;
  }
  return false;
}

/**
 * A pg client emits 'error' when its connection drops, also while nobody is waiting for a query
 * (idle, or checked out of a pool, whose own listener is removed then). Without a listener Node
 * ends the process; with this one the error is reported and the query in flight, if any, rejects.
 */
export function guardClient<C extends pg.Client | pg.PoolClient>(
  client: C,
  onError: (err: Error) => void = () => undefined,
): C {
  client.on('error', onError);
  return client;
}

/** Every client a pool makes gets a permanent error listener, and so does the pool itself. */
export function guardPool(pool: pg.Pool, onError: (err: Error) => void = () => undefined): pg.Pool {
  pool.on('error', onError);
  pool.on('connect', (client) => {
    client.on('error', onError);
  });
  return pool;
}

/** Capped exponential backoff with jitter for reconnecting long-lived connections: 250 ms … 5 s. */
export function reconnectDelay(attempt: number): number {
  const capped = Math.min(5_000, 250 * 2 ** Math.min(attempt, 10));
  return capped / 2 + Math.random() * (capped / 2);
}
