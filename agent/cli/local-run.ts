import { buildRegistry } from '../commands/catalog.js';
import { CommandEngine } from '../commands/engine.js';
import type { Config } from '../config/options.js';
import type { CommandRegistry } from '../commands/registry.js';
import type { CommandRecord } from '../protocol/schema.js';
import type { Logger } from '../util/logger.js';
import { EXIT_FAILED, EXIT_OK, EXIT_USAGE, prepare } from './context.js';
import { ProgressBar } from './format.js';

export interface LocalRunOutcome {
  exitCode: number;
  record: CommandRecord | null;
}

/**
 * Runs one command through the same engine the conductor uses, so the console sees exactly the
 * behaviour (validation, errors, progress) a conductor would.
 */
export const runLocally = async (
  registry: CommandRegistry,
  logger: Logger,
  name: string,
  params: Record<string, unknown>,
  options: { json: boolean },
): Promise<LocalRunOutcome> => {
  const engine = new CommandEngine(registry, { logger });
  const bar = new ProgressBar();
  engine.on({ progress: (_id, progress) => bar.update(progress) });
  const outcome = engine.run(`local:${process.pid}:${Date.now()}`, name, params);
  if (!outcome.ok) {
    const { rejection } = outcome;
    const message =
      rejection.kind === 'invalid_params'
        ? `invalid value for ${rejection.violation.field}: ${rejection.violation.expected}`
        : rejection.kind === 'unknown_command'
          ? `unknown command ${rejection.name}`
          : `busy: ${rejection.running} is running`;
    process.stderr.write(`bm-agent: ${message}\n`);
    return { exitCode: EXIT_USAGE, record: null };
  }
  const record = (await engine.wait(outcome.record.command_id)) ?? null;
  bar.done();
  if (!record || record.status !== 'SUCCEEDED') {
    if (options.json) process.stdout.write(`${JSON.stringify(record, null, 2)}\n`);
    const error = record?.error;
    process.stderr.write(
      `bm-agent: ${name} failed: ${error ? `${error.code}: ${error.message}` : 'no record'}\n`,
    );
    return { exitCode: EXIT_FAILED, record };
  }
  return { exitCode: EXIT_OK, record };
};

/** Flag values that may be given once or repeated, as strings. */
export const flagList = (value: unknown): string[] =>
  value === undefined ? [] : (Array.isArray(value) ? value : [value]).map(String);

/**
 * One local verb: settings, the command through the engine, then its result as JSON (`--json`)
 * or as text for a person. `params` may read the settings (e.g. `ipa-collect-lldp`).
 */
export const runVerb = async (
  flags: Record<string, unknown>,
  name: string,
  params: Record<string, unknown> | ((config: Config) => Record<string, unknown>),
  render: (result: Record<string, unknown>) => string,
): Promise<number> => {
  const { loaded, logger } = await prepare(flags, { stream: 'stderr' });
  const json = flags.json === true;
  const resolved = typeof params === 'function' ? params(loaded.config) : params;
  const { exitCode, record } = await runLocally(
    buildRegistry(loaded.config, logger),
    logger,
    name,
    resolved,
    { json },
  );
  if (exitCode !== EXIT_OK || !record) return exitCode;
  const result = record.result ?? {};
  process.stdout.write(json ? `${JSON.stringify(result, null, 2)}\n` : render(result));
  return EXIT_OK;
};
