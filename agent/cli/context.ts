import { effectiveLogLevel, loadConfig, type LoadedConfig } from '../config/load.js';
import { AgentError } from '../util/errors.js';
import { createLogger, type LogForwarder, type Logger, type LogRing } from '../util/logger.js';

export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;

export interface CliContext {
  loaded: LoadedConfig;
  logger: Logger;
}

/**
 * Loads configuration and a logger for one CLI verb, and reports what the kernel command line
 * had wrong exactly once.
 */
export const prepare = async (
  flags: Record<string, unknown>,
  options: { stream: 'stdout' | 'stderr'; forwarder?: LogForwarder; ring?: LogRing },
): Promise<CliContext> => {
  const loaded = await loadConfig({ flags });
  const { config, sources } = loaded;
  // At a console a local verb's own output is the answer; routine info lines would only bury it.
  const chosen = sources.logLevel !== 'default' || sources.debug !== 'default';
  const logger = createLogger({
    level: options.stream === 'stderr' && !chosen ? 'warn' : effectiveLogLevel(config),
    stream: options.stream,
    forwarder: options.forwarder,
    ring: options.ring,
  });
  for (const notice of loaded.notices) logger[notice.level]({ arg: notice.arg }, notice.msg);
  return { loaded, logger };
};

/** Turns an error escaping a verb into a message and the exit code the CLI promises. */
export const exitCodeFor = (error: unknown): number =>
  AgentError.is(error) && error.code === 'INVALID_CONFIG' ? EXIT_USAGE : EXIT_FAILED;
