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

type EraseTarget = { device: string } | { root_device_hints: Record<string, string> } | { all: true };

const eraseTarget = (flags: Record<string, unknown>): EraseTarget => {
  const device = typeof flags.device === 'string' ? flags.device : undefined;
  const hintFlags = flagList(flags.hint);
  const all = flags.all === true;
  if ([device !== undefined, hintFlags.length > 0, all].filter(Boolean).length !== 1)
    throw new AgentError(
      'INVALID_CONFIG',
      'give one of --device DEV, one or more --hint KEY=VALUE, or --all',
    );
  if (all) return { all: true };
  return device === undefined ? { root_device_hints: parseHintFlags(hintFlags) } : { device };
};

interface ErasedDevice {
  device?: unknown;
  wiped?: unknown;
  bytes?: unknown;
  method?: unknown;
}

/** One disk's lines, or every disk's and the ones skipped. */
export const renderEraseAll = (result: {
  devices?: unknown;
  skipped?: unknown;
  seconds?: unknown;
}): string => {
  const devices = Array.isArray(result.devices) ? (result.devices as ErasedDevice[]) : [];
  const skipped = Array.isArray(result.skipped)
    ? (result.skipped as Array<{ device?: unknown; reason?: unknown }>)
    : [];
  const lines = devices.map((entry) =>
    entry.bytes === undefined
      ? renderErase({ device: entry.device, wiped: entry.wiped, seconds: result.seconds }).trimEnd()
      : `zeroed ${String(entry.bytes)} bytes of ${String(entry.device)} (${String(entry.method)})`,
  );
  for (const entry of skipped) lines.push(`skipped ${String(entry.device)}: ${String(entry.reason)}`);
  if (devices.length === 0) lines.push('no disk to erase');
  return `${lines.join('\n')}\ntook ${String(result.seconds)} s\n`;
};

export const runDiskEraseMetadata = async (flags: Record<string, unknown>): Promise<number> => {
  const target = eraseTarget(flags);
  return 'all' in target
    ? runVerb(flags, 'disk.erase_metadata', target, renderEraseAll)
    : runVerb(flags, 'disk.erase_metadata', target, renderErase);
};

export const runDiskErase = async (flags: Record<string, unknown>): Promise<number> =>
  runVerb(flags, 'disk.erase', eraseTarget(flags), renderEraseAll);
