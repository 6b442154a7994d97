import type pg from 'pg';

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
