import http from 'node:http';

export interface Received {
  headers: Record<string, string>;
  body: string;
  /** What the receiver answered. */
  status: number;
  at: number;
}

export type Behaviour = (req: {
  headers: Record<string, string>;
  body: string;
  n: number;
}) => number | { status: number; headers?: Record<string, string>; delayMs?: number };

/** A real HTTP receiver on loopback that records every request and answers per `behaviour`. */
export class WebhookReceiver {
  readonly received: Received[] = [];
  /** `webhook-id` of every request as it arrived (before it is answered). */
  readonly started: string[] = [];
  inFlight = 0;
  behaviour: Behaviour = () => 204;
  private readonly server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      const headers = Object.fromEntries(
        Object.entries(req.headers).map(([k, v]) => [k, Array.isArray(v) ? v.join(', ') : (v ?? '')]),
      );
      const body = Buffer.concat(chunks).toString('utf8');
      const answer = this.behaviour({ headers, body, n: this.started.length });
      this.started.push(headers['webhook-id'] ?? '');
      const a = typeof answer === 'number' ? { status: answer } : answer;
      this.inFlight++;
      if (a.delayMs) {
        // A held request ends early when the client goes away (e.g. the sender was killed).
        await new Promise<void>((r) => {
          const timer = setTimeout(r, a.delayMs);
          res.once('close', () => {
            clearTimeout(timer);
            r();
          });
        });
      }
      this.inFlight--;
      if (res.destroyed) return;
      this.received.push({ headers, body, status: a.status, at: Date.now() });
      res.writeHead(a.status, a.headers ?? {});
      res.end(a.status >= 400 ? `error ${a.status}` : '');
    });
  });
  url = '';

  async start(): Promise<this> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    const addr = this.server.address();
    this.url = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
    return this;
  }

  /** Waits until `predicate` holds over what was received. */
  async waitFor(predicate: (r: Received[]) => boolean, timeoutMs = 15_000): Promise<Received[]> {
    const until = Date.now() + timeoutMs;
    while (!predicate(this.received)) {
      if (Date.now() > until)
        throw new Error(`receiver: condition not met; got ${this.received.length} requests`);
      await new Promise((r) => setTimeout(r, 20));
    }
    return this.received;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}
