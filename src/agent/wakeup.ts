/**
 * The wake-ups of one waiting request (a long poll of a cell agent). It is made, and subscribed to
 * its notifications, before the request's first look, so a notification that comes while it looks
 * is not lost: `take()` before each look, then `sleep()` returns at once if something came since.
 */
export class Wakeup {
  private pending = false;
  private release: (() => void) | undefined;

  constructor(private readonly signals: readonly AbortSignal[]) {
    for (const s of signals) s.addEventListener('abort', this.wake, { once: true });
  }

  readonly wake = (): void => {
    this.pending = true;
    const r = this.release;
    this.release = undefined;
    r?.();
  };

  /** Before a look: what woke the request until now is what it is about to look at. */
  take(): void {
    this.pending = false;
  }

  /** Up to `ms`, unless woken (or woken since the last `take()`). */
  async sleep(ms: number): Promise<void> {
    if (this.pending) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        this.release = undefined;
        resolve();
      }, ms);
      this.release = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }

  close(): void {
    for (const s of this.signals) s.removeEventListener('abort', this.wake);
    this.release?.();
  }
}
