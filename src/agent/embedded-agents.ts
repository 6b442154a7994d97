import fs from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import type { ProviderSet } from '../controller/providers.js';
import type { AgentService } from './agent.service.js';
import type { TenantSecrets } from './agent-ops.js';
import { CellAgent } from './cell-agent.js';

export interface EmbeddedAgentsOptions {
  agents: AgentService;
  /** This process's own API, over loopback. */
  server: string;
  /** This process's providers (the embedded default's: local disk, the owner server's data plane, …). */
  providers: ProviderSet;
  /** Where those providers keep generated credentials (the control-plane database, in process). */
  secrets?: TenantSecrets;
  dataDir: string;
  logger: Logger;
  resyncMs: number;
  /** How often it looks for cells to take. */
  intervalMs: number;
}

/**
 * The embedded default's data plane: for every cell that no remote agent joined, the same
 * CellAgent as `tenantry agent`, in this process, talking to this process's API over loopback with
 * a join token it mints for itself. Cells created later are taken at the next look.
 */
export class EmbeddedAgents {
  private readonly running = new Map<string, CellAgent>();
  private timer: NodeJS.Timeout | undefined;
  private looking: Promise<void> = Promise.resolve();

  constructor(private readonly o: EmbeddedAgentsOptions) {}

  async start(): Promise<void> {
    await this.look();
    this.timer = setInterval(() => {
      // One look at a time: two would start two agents for one cell, the second revoking the first.
      if (this.busy) return;
      this.looking = this.look();
    }, this.o.intervalMs);
    this.timer.unref();
  }

  private busy = false;
  private stopped = false;

  private async look(): Promise<void> {
    this.busy = true;
    try {
      for (const { cellId, token } of await this.o.agents.embeddedJoinTokens(new Set(this.running.keys()))) {
        const stateDir = path.join(this.o.dataDir, 'agents', cellId);
        // A fresh join per process start: the saved credential of an earlier run is not reused.
        await fs.rm(path.join(stateDir, 'agent-state.json'), { force: true });
        const agent = new CellAgent({
          server: this.o.server,
          cell: cellId,
          joinToken: token,
          stateDir,
          providers: this.o.providers,
          ...(this.o.secrets ? { secrets: this.o.secrets } : {}),
          logger: this.o.logger.child({ cell: cellId }),
          name: 'embedded',
          resyncMs: this.o.resyncMs,
        });
        if (this.stopped) return;
        this.running.set(cellId, agent);
        try {
          await agent.start();
        } catch (err) {
          this.running.delete(cellId);
          throw err;
        }
      }
    } catch (err) {
      this.o.logger.warn({ err: (err as Error).message }, 'starting in-process cell agents failed');
    } finally {
      this.busy = false;
    }
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.stopped = true;
    await this.looking;
    await Promise.allSettled([...this.running.values()].map((a) => a.stop()));
    this.running.clear();
  }
}
