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
  behaviour: Behaviour = () => 204;
  private readonly server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      const headers = Object.fromEntries(
        Object.entries(req.headers).map(([k, v]) => [k, Array.isArray(v) ? v.join(', ') : (v ?? '')]),
      );
      const body = Buffer.concat(chunks).toString('utf8');
      const answer = this.behaviour({ headers, body, n: this.received.length });
      const a = typeof answer === 'number' ? { status: answer } : answer;
      if (a.delayMs) await new Promise((r) => setTimeout(r, a.delayMs));
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
