/**
 * A download the server cannot resume (no validator, Range ignored, the file changed) must start
 * over from byte 0: whatever consumed the first bytes (a disk, a staged file) starts over with it.
 * image.write and the BFB staging share this rule and its bound.
 */
import { AgentError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';

export const MAX_RESTARTS = 3;

export const isRestartRequired = (error: unknown): boolean =>
  AgentError.is(error) && error.code === 'DOWNLOAD_RESTART_REQUIRED';

/**
 * Runs `attempt` (given the restarts so far) until it succeeds; DOWNLOAD_RESTART_REQUIRED runs it
 * again, at most MAX_RESTARTS times and never once the signal is aborted. Other errors pass through.
 */
export const withRestarts = async <T>(
  attempt: (restarts: number) => Promise<T>,
  options: { signal: AbortSignal; logger: Logger; message: string },
): Promise<T> => {
  for (let restarts = 0; ; restarts += 1) {
    try {
      return await attempt(restarts);
    } catch (error) {
      if (!isRestartRequired(error) || restarts >= MAX_RESTARTS || options.signal.aborted) throw error;
      options.logger.warn({ restarts: restarts + 1, err: error }, options.message);
    }
  }
};
