import { buildRegistry } from '../commands/catalog.js';
import { AgentError } from '../util/errors.js';
import { EXIT_OK, prepare } from './context.js';
import { formatBytes } from './format.js';
import { parseHintFlags } from './disk.js';
import { runLocally } from './local-run.js';

const asStrings = (value: unknown): string[] =>
  value === undefined ? [] : (Array.isArray(value) ? value : [value]).map(String);

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
  const hintFlags = asStrings(flags.hint);
  if (device !== undefined && hintFlags.length > 0) {
    throw new AgentError('INVALID_CONFIG', 'give --device DEV or --hint KEY=VALUE, not both');
  }
  const params: Record<string, unknown> = { url };
  if (device !== undefined) params.device = device;
  if (hintFlags.length > 0) params.root_device_hints = parseHintFlags(hintFlags);
  if (typeof flags.checksum === 'string') params.checksum = flags.checksum;
  if (typeof flags['disk-format'] === 'string') params.disk_format = flags['disk-format'];
  const { loaded, logger } = await prepare(flags, { stream: 'stderr' });
  const json = flags.json === true;
  const { exitCode, record } = await runLocally(
    buildRegistry(loaded.config, logger),
    logger,
    'image.write',
    params,
    { json },
  );
  if (exitCode !== EXIT_OK || !record) return exitCode;
  const result = record.result ?? {};
  process.stdout.write(json ? `${JSON.stringify(result, null, 2)}\n` : `${renderImageResult(result)}\n`);
  return EXIT_OK;
};
