import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface ClientOptions {
  server?: string;
  token?: string;
  /** How long a request is retried while the server is unreachable or answers 503 (default 60 s). */
  retryForMs?: number;
}

/** The longest wait between two attempts, whatever Retry-After says. */
const MAX_RETRY_WAIT_MS = 5_000;

export interface ProblemBody {
  code?: string;
  detail?: string;
  status?: number;
  errors?: { pointer: string; code: string; detail: string }[];
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly problem: ProblemBody,
  ) {
    super(problem.detail ?? `HTTP ${status}`);
  }
}

/** ~/.config/tenantry/config.json: { "server": "...", "token": "..." } (mode 0600: it holds a token). */
export function credentialsFile(): string {
  return path.join(
    process.env.XDG_CONFIG_HOME ?? path.join(os.homedir(), '.config'),
    'tenantry',
    'config.json',
  );
}

function fileConfig(): ClientOptions {
  try {
    return JSON.parse(fs.readFileSync(credentialsFile(), 'utf8')) as ClientOptions;
  } catch {
    return {};
  }
}

/** Merges into the credentials file, readable by its owner only. */
export function saveCredentials(update: ClientOptions): void {
  const file = credentialsFile();
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  fs.writeFileSync(file, `${JSON.stringify({ ...fileConfig(), ...update }, null, 2)}\n`, { mode: 0o600 });
  fs.chmodSync(file, 0o600);
}

/** The CLI talks to the server over HTTP only, never to the database. */
export class TenantryClient {
  readonly server: string;
  private readonly token: string | undefined;
  private readonly retryForMs: number;

  constructor(opts: ClientOptions) {
    this.retryForMs = opts.retryForMs ?? 60_000;
    const file = fileConfig();
    this.server = (
      opts.server ??
      process.env.TENANTRY_SERVER ??
      file.server ??
      'http://127.0.0.1:8080'
    ).replace(/\/$/, '');
    this.token = opts.token || process.env.TENANTRY_TOKEN || file.token;
  }

  /** A streaming GET (Server-Sent Events): the response as it arrives; problem+json is thrown. */
  stream(urlPath: string, headers: Record<string, string> = {}, signal?: AbortSignal): Promise<Response> {
    return this.fetch('GET', urlPath, undefined, { accept: 'text/event-stream', ...headers }, signal);
  }

  /**
   * Sends a request; a non-2xx answer becomes an ApiError carrying its problem details. While the
   * server cannot be reached or answers 503 (its database restarting), the request is sent again
   * after Retry-After, for up to `retryForMs`. A POST carries an Idempotency-Key, the same on every
   * attempt, so a write the server committed before its answer was lost is replayed, not repeated.
   */
  async fetch(
    method: string,
    urlPath: string,
    body?: unknown,
    headers: Record<string, string> = {},
    signal?: AbortSignal,
  ): Promise<Response> {
    const keyed =
      method === 'POST' && !Object.keys(headers).some((h) => h.toLowerCase() === 'idempotency-key')
        ? { ...headers, 'idempotency-key': randomUUID() }
        : headers;
    const deadline = Date.now() + this.retryForMs;
    for (;;) {
      let res: Response | undefined;
      let unreachable: Error | undefined;
      try {
        res = await fetch(`${this.server}${urlPath}`, {
          method,
          signal,
          headers: {
            accept: 'application/json',
            ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
            ...(this.token ? { authorization: `Bearer ${this.token}` } : {}),
            ...keyed,
          },
          body: body !== undefined ? JSON.stringify(body) : undefined,
        });
      } catch (err) {
        if (signal?.aborted) throw err;
        unreachable = err as Error;
      }
      // 503: the server is up and its database is not. A connection that broke after the request
      // went out may have lost the answer to a committed write: the key makes sending it again safe.
      // A server that refuses connections is not waited for.
      const broken = ['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET'].includes(
        String((unreachable as (Error & { cause?: { code?: unknown } }) | undefined)?.cause?.code),
      );
      if ((res?.status === 503 || broken) && Date.now() < deadline) {
        const after = Number(res?.headers.get('retry-after') ?? '1');
        await res?.body?.cancel();
        const wait = Math.min(
          MAX_RETRY_WAIT_MS,
          Number.isFinite(after) ? after * 1000 : 1000,
          deadline - Date.now(),
        );
        await new Promise((r) => setTimeout(r, Math.max(0, wait)));
        continue;
      }
      if (unreachable || !res) {
        throw new ApiError(0, {
          code: 'client.unreachable',
          detail: `cannot reach ${this.server}: ${(unreachable as Error & { cause?: unknown }).cause ?? unreachable?.message}`,
        });
      }
      if (!res.ok) {
        const text = await res.text();
        let parsed: unknown;
        try {
          parsed = JSON.parse(text);
        } catch {
          // not JSON
        }
        throw new ApiError(
          res.status,
          typeof parsed === 'object' && parsed ? (parsed as ProblemBody) : { detail: text },
        );
      }
      return res;
    }
  }

  async request<T>(
    method: string,
    urlPath: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<{ status: number; body: T; headers: Headers }> {
    const res = await this.fetch(method, urlPath, body, headers);
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      // not JSON
    }
    return { status: res.status, body: parsed as T, headers: res.headers };
  }
}
