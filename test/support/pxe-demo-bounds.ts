/**
 * How long `make demo` may wait: each wait has its own limit, and the whole run has one too, as
 * does the person at the terminal (Ctrl-C). Whichever comes first ends the wait with a message
 * that says what was awaited and where to look.
 */
import { timeoutMessage } from './pxe-demo-view.js';

/** A failure of the run, with a message for the person watching; no stack is shown. */
export class DemoFailure extends Error {}

/** Waits bounded by `limitS` and by the run's own end: its deadline, or Ctrl-C. */
export class Bounds {
  consoleLog: string | null = null;
  /** Why the run ended early; null while it goes on. */
  ended: 'deadline' | NodeJS.Signals | null = null;
  private readonly controller = new AbortController();
  private readonly timer: NodeJS.Timeout;

  constructor(readonly totalS: number) {
    this.timer = setTimeout(() => this.end('deadline'), totalS * 1000);
    this.timer.unref();
  }

  /** True once Ctrl-C (or another signal) ended the run. */
  get interrupted(): boolean {
    return this.ended !== null && this.ended !== 'deadline';
  }

  end(why: 'deadline' | NodeJS.Signals): void {
    if (this.ended !== null) return;
    this.ended = why;
    this.controller.abort();
  }

  within<T>(promise: Promise<T>, what: string, limitS: number): Promise<T> {
    const signal = this.controller.signal;
    return new Promise<T>((resolve, reject) => {
      const finish = (): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
      };
      const onAbort = (): void => {
        finish();
        reject(
          new DemoFailure(
            this.ended === 'deadline'
              ? timeoutMessage(`${what} (the whole demo's limit)`, this.totalS, this.consoleLog)
              : `interrupted (${this.ended ?? '?'}) while waiting for ${what}`,
          ),
        );
      };
      const timer = setTimeout(() => {
        finish();
        reject(new DemoFailure(timeoutMessage(what, limitS, this.consoleLog)));
      }, limitS * 1000);
      if (signal.aborted) return onAbort();
      signal.addEventListener('abort', onAbort, { once: true });
      promise.then(
        (value) => {
          finish();
          resolve(value);
        },
        (error: unknown) => {
          finish();
          reject(error instanceof Error ? error : new Error(String(error)));
        },
      );
    });
  }

  dispose(): void {
    clearTimeout(this.timer);
  }
}

/** BMA_DEMO_LIMIT_S: a shorter (or longer) bound for the whole run, in whole seconds. */
export const demoLimitS = (raw: string | undefined, fallback: number): number => {
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!/^\d+$/.test(raw) || value < 1 || value > 3600)
    throw new DemoFailure(`BMA_DEMO_LIMIT_S=${raw}: expected whole seconds from 1 to 3600`);
  return value;
};
