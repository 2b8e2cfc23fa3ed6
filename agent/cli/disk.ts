import { AgentError } from '../util/errors.js';
import { flagList, runVerb } from './local-run.js';

/**
 * `--hint KEY=VALUE` (repeatable) as a hints object. Values stay strings: the hints parser reads
 * "100", ">= 100" and "true" as IPA does, and names the field when one is wrong.
 */
export const parseHintFlags = (values: readonly string[]): Record<string, string> => {
  const hints: Record<string, string> = {};
  for (const value of values) {
    const at = value.indexOf('=');
    if (at <= 0)
      throw new AgentError(
        'INVALID_CONFIG',
        `--hint ${value}: expected KEY=VALUE, e.g. --hint "size=>= 100"`,
      );
    const key = value.slice(0, at).trim();
    if (Object.hasOwn(hints, key)) throw new AgentError('INVALID_CONFIG', `--hint ${key} is given twice`);
    hints[key] = value.slice(at + 1);
  }
  return hints;
};

export const renderErase = (result: { device?: unknown; wiped?: unknown; seconds?: unknown }): string => {
  const wiped = Array.isArray(result.wiped) ? result.wiped.map(String) : [];
  return `erased metadata on ${String(result.device)} in ${String(result.seconds)} s\n${wiped.map((entry) => `  ${entry}\n`).join('')}`;
};

export const runDiskEraseMetadata = async (flags: Record<string, unknown>): Promise<number> => {
  const device = typeof flags.device === 'string' ? flags.device : undefined;
  const hintFlags = flagList(flags.hint);
  if ((device === undefined) === (hintFlags.length === 0))
    throw new AgentError('INVALID_CONFIG', 'give --device DEV or one or more --hint KEY=VALUE (not both)');
  const params = device === undefined ? { root_device_hints: parseHintFlags(hintFlags) } : { device };
  return runVerb(flags, 'disk.erase_metadata', params, renderErase);
};
