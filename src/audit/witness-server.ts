import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import fs from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { type Checkpoint, CheckpointError, openCheckpoint } from './checkpoint-note.js';
import { cosign, type Witness } from './cosignature.js';
import { verifyConsistency } from './merkle.js';

/**
 * A transparency-log witness, c2sp.org/tlog-witness: `POST /add-checkpoint` with an old size, a
 * consistency proof and a checkpoint signed by a log it trusts. It cosigns the checkpoint
 * (c2sp.org/tlog-cosignature) only if it extends, by that proof, the latest checkpoint it cosigned for
 * that origin — so a log that rewrote, truncated or forked its history gets no cosignature again.
 * It runs as its own process (`tenantry witness serve`), with its own key and state file, ideally
 * on a machine the log's operator does not control.
 *
 * Concurrency contract: requests are handled one at a time per witness (a promise chain), so the
 * check of the old size and the persisting of the new checkpoint are atomic, as the protocol
 * requires; the state file is replaced by rename after fsync before the cosignature is returned.
 */

export interface WitnessState {
  /** Per log origin, the latest checkpoint cosigned. */
  logs: Record<string, { size: number; root: string; time: number }>;
}

export interface WitnessServerOptions {
  name: string;
  privateKey: KeyObject;
  /** Keys of the logs whose checkpoints it cosigns (their note key name is the origin). */
  logKeys: readonly KeyObject[];
  /** Origins it witnesses: exactly these, or any starting with a prefix ending in '/'. */
  origins: readonly string[];
  stateFile: string;
  /** POSIX seconds; the test clock. */
  now?: () => number;
}

export class HttpStatusError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly contentType = 'text/plain; charset=utf-8',
  ) {
    super(message);
  }
}

const MAX_BODY = 64 * 1024;

/** Parses an add-checkpoint body: `old N\n`, up to 63 base64 hashes, an empty line, a checkpoint. */
export function parseAddCheckpoint(body: string): { old: number; proof: Buffer[]; note: string } {
  const lines: string[] = [];
  let at = 0;
  for (;;) {
    const nl = body.indexOf('\n', at);
    if (nl < 0) throw new HttpStatusError(400, 'the request ends before the empty line');
    const line = body.slice(at, nl);
    at = nl + 1;
    if (line === '') break;
    lines.push(line);
  }
  const m = /^old (0|[1-9][0-9]{0,15})$/.exec(lines[0] ?? '');
  if (!m) throw new HttpStatusError(400, 'the first line must be "old <size>"');
  const proofLines = lines.slice(1);
  if (proofLines.length > 63) throw new HttpStatusError(400, 'more than 63 consistency proof lines');
  const proof = proofLines.map((l) => {
    const h = Buffer.from(l, 'base64');
    if (h.length !== 32 || h.toString('base64') !== l)
      throw new HttpStatusError(400, 'a consistency proof line is not a base64 SHA-256 hash');
    return h;
  });
  return { old: Number(m[1]), proof, note: body.slice(at) };
}

export class WitnessService {
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly opts: WitnessServerOptions,
    private state: WitnessState,
  ) {}

  static async open(opts: WitnessServerOptions): Promise<WitnessService> {
    return new WitnessService(opts, await readState(opts.stateFile));
  }

  get witness(): Witness {
    return { name: this.opts.name, publicKey: createPublicKey(this.opts.privateKey) };
  }

  private known(origin: string): boolean {
    return this.opts.origins.some((o) => (o.endsWith('/') ? origin.startsWith(o) : origin === o));
  }

  /** Handles one add-checkpoint body; resolves to the cosignature line(s), or throws HttpStatusError. */
  addCheckpoint(body: string): Promise<string> {
    const run = this.queue.then(() => this.add(body));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async add(body: string): Promise<string> {
    const { old, proof, note } = parseAddCheckpoint(body);
    const origin = note.slice(0, note.indexOf('\n'));
    if (!this.known(origin)) throw new HttpStatusError(404, `unknown log origin ${origin}`);
    let cp: Checkpoint;
    try {
      cp = openCheckpoint(note, this.opts.logKeys);
    } catch (err) {
      if (err instanceof CheckpointError) throw new HttpStatusError(403, err.message);
      throw err;
    }
    if (old > cp.size)
      throw new HttpStatusError(400, `old size ${old} is above the checkpoint size ${cp.size}`);
    const latest = this.state.logs[origin];
    const latestSize = latest?.size ?? 0;
    if (old !== latestSize) throw new HttpStatusError(409, `${latestSize}\n`, 'text/x.tlog.size');
    if (old === 0 && proof.length > 0)
      throw new HttpStatusError(422, 'the consistency proof from size 0 must be empty');
    if (latest && old === cp.size) {
      if (latest.root !== cp.root.toString('base64'))
        throw new HttpStatusError(409, `${latestSize}\n`, 'text/x.tlog.size');
    } else if (
      latest &&
      old > 0 &&
      !verifyConsistency(old, cp.size, proof, Buffer.from(latest.root, 'base64'), cp.root)
    ) {
      throw new HttpStatusError(
        422,
        `the checkpoint of ${origin} at ${cp.size} is not consistent with the one cosigned at ${old}`,
      );
    }
    const time = Math.floor(this.opts.now?.() ?? Date.now() / 1000);
    const next: WitnessState = {
      logs: { ...this.state.logs, [origin]: { size: cp.size, root: cp.root.toString('base64'), time } },
    };
    await writeState(this.opts.stateFile, next);
    this.state = next;
    return cosign(this.opts.name, this.opts.privateKey, note, time);
  }
}

async function readState(file: string): Promise<WitnessState> {
  try {
    const parsed = JSON.parse(await fs.readFile(file, 'utf8')) as WitnessState;
    return { logs: parsed.logs ?? {} };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { logs: {} };
    throw err;
  }
}

/** Replaces the state file durably: write, fsync, rename, fsync the folder. */
async function writeState(file: string, state: WitnessState): Promise<void> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  const h = await fs.open(tmp, 'w', 0o600);
  try {
    await h.writeFile(JSON.stringify(state, null, 2));
    await h.sync();
  } finally {
    await h.close();
  }
  await fs.rename(tmp, file);
  const dir = await fs.open(path.dirname(file), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

/** The witness's Ed25519 key from `file` (PKCS#8 PEM), created (mode 0600) when absent. */
export async function loadWitnessKey(file: string): Promise<KeyObject> {
  try {
    return createPrivateKey(await fs.readFile(file, 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const { privateKey } = generateKeyPairSync('ed25519');
  try {
    await fs.writeFile(file, privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), {
      mode: 0o600,
      flag: 'wx',
    });
    return privateKey;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    return createPrivateKey(await fs.readFile(file, 'utf8'));
  }
}

/** Serves `service` over HTTP: POST /add-checkpoint (tlog-witness), anything else 404. */
export async function serveWitness(
  service: WitnessService,
  listen: { host: string; port: number },
): Promise<{ url: string; close: () => Promise<void> }> {
  const server = http.createServer((req, res) => {
    const reply = (status: number, body: string, contentType = 'text/plain; charset=utf-8') => {
      res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(body) });
      res.end(body);
    };
    if (req.method !== 'POST' || req.url !== '/add-checkpoint') return reply(404, 'not found\n');
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        reply(413, 'request too large\n');
        req.destroy();
      } else chunks.push(c);
    });
    req.on('end', () => {
      if (res.headersSent) return;
      service.addCheckpoint(Buffer.concat(chunks).toString('utf8')).then(
        (lines) => reply(200, lines),
        (err: unknown) => {
          if (err instanceof HttpStatusError)
            reply(err.status, err.message.endsWith('\n') ? err.message : `${err.message}\n`, err.contentType);
          else reply(500, 'internal error\n');
        },
      );
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  return {
    url: `http://${host}:${addr.port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
