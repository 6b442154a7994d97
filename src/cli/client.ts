import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface ClientOptions {
  server?: string;
  token?: string;
}

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

  constructor(opts: ClientOptions) {
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

  /** Sends a request; a non-2xx answer becomes an ApiError carrying its problem details. */
  async fetch(
    method: string,
    urlPath: string,
    body?: unknown,
    headers: Record<string, string> = {},
    signal?: AbortSignal,
  ): Promise<Response> {
    let res: Response;
    try {
      res = await fetch(`${this.server}${urlPath}`, {
        method,
        signal,
        headers: {
          accept: 'application/json',
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
          ...(this.token ? { authorization: `Bearer ${this.token}` } : {}),
          ...headers,
        },
        body: body !== undefined ? JSON.stringify(body) : undefined,
      });
    } catch (err) {
      throw new ApiError(0, {
        code: 'client.unreachable',
        detail: `cannot reach ${this.server}: ${(err as Error).cause ?? (err as Error).message}`,
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
