import { readFile } from 'node:fs/promises';
import { AgentError } from '../util/errors.js';
import { parseCmdline } from './cmdline.js';
import { IPA_ARGS_NOT_USED, OPTIONS, type Config, type ConfigKey, type OptionSpec } from './options.js';
import { ValueError } from './parsers.js';

export type ConfigSource = 'default' | 'kernel' | 'env' | 'flag';

export interface ConfigNotice {
  level: 'debug' | 'info' | 'warn';
  msg: string;
  arg: string;
}

export interface LoadedConfig {
  config: Config;
  sources: Record<ConfigKey, ConfigSource>;
  /** What the kernel command line had that was malformed or unknown; logged once by the caller. */
  notices: ConfigNotice[];
}

export interface ConfigInput {
  cmdline?: string;
  env?: NodeJS.ProcessEnv;
  flags?: Record<string, unknown>;
}

const KERNEL_INDEX = new Map<string, OptionSpec>(
  OPTIONS.flatMap((spec) => spec.kernel.map((name) => [name, spec])),
);

const defaults = (): { config: Config; sources: Record<ConfigKey, ConfigSource> } => {
  const config = {} as Record<ConfigKey, unknown>;
  const sources = {} as Record<ConfigKey, ConfigSource>;
  for (const spec of OPTIONS) {
    config[spec.key] = spec.default;
    sources[spec.key] = 'default';
  }
  return { config: config as unknown as Config, sources };
};

/**
 * Kernel arguments, then environment, then flags, each overriding the one before. A bad kernel
 * argument must not keep a node from booting, so it becomes a notice; a bad flag or variable was
 * typed by a person, so it is an error that names it.
 */
export const buildConfig = (input: ConfigInput): LoadedConfig => {
  const { config, sources } = defaults();
  const target = config as unknown as Record<ConfigKey, unknown>;
  const notices: ConfigNotice[] = [];

  for (const [name, raw] of parseCmdline(input.cmdline ?? '')) {
    const spec = KERNEL_INDEX.get(name);
    if (!spec) {
      if (name.startsWith('bma-'))
        notices.push({ level: 'warn', arg: name, msg: `unknown kernel argument ${name}; ignored` });
      else if (name.startsWith('ipa-')) {
        const known = IPA_ARGS_NOT_USED.has(name);
        notices.push({
          level: known ? 'debug' : 'warn',
          arg: name,
          msg: known
            ? `kernel argument ${name} is not used by bm-agent`
            : `unknown kernel argument ${name}; ignored`,
        });
      }
      continue;
    }
    try {
      target[spec.key] = spec.parse(raw);
      sources[spec.key] = 'kernel';
    } catch (error) {
      const expected = error instanceof ValueError ? error.expected : 'a valid value';
      notices.push({
        level: 'warn',
        arg: name,
        msg: `kernel argument ${name}=${raw} is malformed (${expected}); ignored`,
      });
    }
  }

  const env = input.env ?? {};
  for (const spec of OPTIONS) {
    const raw = spec.env ? env[spec.env] : undefined;
    if (raw === undefined || raw === '') continue;
    target[spec.key] = parseOrThrow(spec, raw, `environment variable ${spec.env}`);
    sources[spec.key] = 'env';
  }

  const flags = input.flags ?? {};
  for (const spec of OPTIONS) {
    if (!spec.flag) continue;
    const raw = flags[spec.flag];
    if (raw === undefined || raw === null) continue;
    const value = typeof raw === 'number' ? String(raw) : raw;
    if (typeof value !== 'string' && typeof value !== 'boolean') {
      throw invalid(`--${spec.flag}`, 'a single value');
    }
    target[spec.key] = parseOrThrow(spec, value, `--${spec.flag}`);
    sources[spec.key] = 'flag';
  }

  if (config.backoffMaxS < config.backoffMinS)
    throw invalid('backoff-max', `a value of at least backoff-min (${config.backoffMinS})`);
  return { config, sources, notices };
};

const invalid = (what: string, expected: string, raw?: string): AgentError =>
  new AgentError(
    'INVALID_CONFIG',
    `${what}${raw === undefined ? '' : `=${raw}`} is malformed: expected ${expected}`,
    {
      details: { setting: what, expected },
    },
  );

const parseOrThrow = (spec: OptionSpec, raw: string | boolean, what: string): unknown => {
  try {
    return spec.parse(raw);
  } catch (error) {
    throw invalid(
      what,
      error instanceof ValueError ? error.expected : 'a valid value',
      typeof raw === 'string' ? raw : undefined,
    );
  }
};

/**
 * Reads the kernel command line from BMA_CMDLINE, `--cmdline`, or `<proc>/cmdline`. A missing
 * file is not fatal: the agent can still be driven by flags at a console.
 */
export const loadConfig = async (
  options: { env?: NodeJS.ProcessEnv; flags?: Record<string, unknown> } = {},
): Promise<LoadedConfig & { cmdlinePath: string }> => {
  const env = options.env ?? process.env;
  const flags = options.flags ?? {};
  const fromFlag = typeof flags.cmdline === 'string' ? flags.cmdline : undefined;
  const procRoot = typeof flags['proc-root'] === 'string' ? flags['proc-root'] : (env.BMA_PROC ?? '/proc');
  const cmdlinePath = fromFlag ?? env.BMA_CMDLINE ?? `${procRoot}/cmdline`;
  let cmdline = '';
  const notices: ConfigNotice[] = [];
  try {
    cmdline = await readFile(cmdlinePath, 'utf8');
  } catch (error) {
    if (fromFlag) throw invalid('--cmdline', 'a readable file', fromFlag);
    notices.push({
      level: 'warn',
      arg: cmdlinePath,
      msg: `cannot read kernel command line ${cmdlinePath}: ${(error as Error).message}`,
    });
  }
  const loaded = buildConfig({ cmdline, env, flags });
  return { ...loaded, notices: [...notices, ...loaded.notices], cmdlinePath };
};

export const effectiveLogLevel = (config: Config): string =>
  config.logLevel ?? (config.debug ? 'debug' : 'info');
