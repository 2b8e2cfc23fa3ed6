import type { ProcessResult, RunProcess, RunProcessOptions } from '../../../util/run-process.js';
import { findOnPath } from '../../../util/run-process.js';

/**
 * The programs the inventory runs: lsblk always, ipmitool and biosdevname only when present.
 * `toolPath` replaces PATH both for the lookup and for the programs themselves, so tests can put
 * fake tools on a private PATH.
 */
export interface Tools {
  run(name: string, args: string[], options?: Pick<RunProcessOptions, 'timeoutMs'>): Promise<ProcessResult>;
  has(name: string): Promise<boolean>;
  readonly signal: AbortSignal | undefined;
}

export const createTools = (
  runProcess: RunProcess,
  toolPath: string | undefined,
  signal: AbortSignal | undefined,
): Tools => ({
  signal,
  run: (name, args, options = {}) =>
    runProcess(name, args, {
      ...options,
      ...(signal ? { signal } : {}),
      ...(toolPath === undefined ? {} : { env: { PATH: toolPath } }),
    }),
  has: async (name) => (await findOnPath(name, toolPath ?? process.env.PATH ?? '')) !== null,
});
