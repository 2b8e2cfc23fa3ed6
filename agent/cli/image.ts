import { AgentError } from '../util/errors.js';
import { formatBytes } from './format.js';
import { parseHintFlags } from './disk.js';
import { flagList, runVerb } from './local-run.js';

export const renderImageResult = (result: Record<string, unknown>): string => {
  const bytes = typeof result.bytes_written === 'number' ? result.bytes_written : null;
  const rate = typeof result.rate_bytes_per_s === 'number' ? result.rate_bytes_per_s : null;
  return [
    `wrote ${formatBytes(bytes)} (${String(result.format)}) to ${String(result.device)} in ${String(result.seconds)} s, ${formatBytes(rate)}/s`,
    `${String(result.checksum)} ${result.checksum_verified === true ? '(verified)' : '(not verified: no checksum given)'}`,
    `resumed ${String(result.resumes)} time(s), restarted ${String(result.restarts)} time(s)`,
  ].join('\n');
};

/** `bm-agent image write URL (--device DEV | --hint KEY=VALUE ...) [--checksum ...]`. */
export const runImageWrite = async (flags: Record<string, unknown>): Promise<number> => {
  const url = typeof flags.url === 'string' ? flags.url : undefined;
  if (!url)
    throw new AgentError('INVALID_CONFIG', 'name the image URL: bm-agent image write URL --device DEV');
  const device = typeof flags.device === 'string' ? flags.device : undefined;
  const hintFlags = flagList(flags.hint);
  if (device !== undefined && hintFlags.length > 0) {
    throw new AgentError('INVALID_CONFIG', 'give --device DEV or --hint KEY=VALUE, not both');
  }
  const params: Record<string, unknown> = { url };
  if (device !== undefined) params.device = device;
  if (hintFlags.length > 0) params.root_device_hints = parseHintFlags(hintFlags);
  if (typeof flags.checksum === 'string') params.checksum = flags.checksum;
  if (typeof flags['disk-format'] === 'string') params.disk_format = flags['disk-format'];
  return runVerb(flags, 'image.write', params, (result) => `${renderImageResult(result)}\n`);
};
