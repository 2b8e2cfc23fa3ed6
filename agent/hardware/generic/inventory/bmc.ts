import { isIPv4, isIPv6 } from 'node:net';
import { AgentError } from '../../../util/errors.js';
import { devPath, type HardwarePaths } from '../../paths.js';
import { exists } from './sysfs.js';
import type { Tools } from './tools.js';
import type { BmcInventory } from './types.js';

// Of the IPMI channels 0-15 only 1-11 can be LAN channels (IPA scans the same range).
const CHANNELS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
const IPMITOOL_TIMEOUT_MS = 15_000;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;
const NULL_MAC = '00:00:00:00:00:00';
const NULL_V6 = /^::(\/\d{1,3})?$/;

/** IPA's values for "no BMC": inspector treats both as absent. */
const NOT_FOUND = { bmc_address: '0.0.0.0', bmc_v6address: '::/0' } as const;

/** The device nodes ipmitool's open interface tries, in its order. */
const hasBmcDevice = async (paths: HardwarePaths): Promise<boolean> =>
  (
    await Promise.all([
      exists(devPath(paths, 'ipmi0')),
      exists(devPath(paths, 'ipmi', '0')),
      exists(devPath(paths, 'ipmidev', '0')),
    ])
  ).some(Boolean);

/** `ipmitool lan print <ch>`: the "IP Address" and "MAC Address" lines. */
export const parseLanPrint = (text: string): { ip: string | null; mac: string | null } => ({
  ip: /^IP Address[ \t]*:[ \t]*(\S+)/m.exec(text)?.[1] ?? null,
  mac: /^MAC Address[ \t]*:[ \t]*(\S+)/m.exec(text)?.[1] ?? null,
});

/** `ipmitool lan6 print <ch> enables`: "ipv4", "ipv6" or "both". */
export const parseLan6Enables = (text: string): string | null =>
  /^IPv6\/IPv4 (?:Addressing Enables|Support Enabled)[ \t]*:[ \t]*(\S+)/m.exec(text)?.[1] ?? null;

/**
 * `ipmitool lan6 print <ch> dynamic_addr|static_addr`: the first active, non-null address of the
 * sets printed, without its prefix length.
 */
export const parseLan6Address = (text: string): string | null => {
  let address: string | null = null;
  for (const line of text.split('\n')) {
    if (/^IPv6 (Dynamic|Static) Address \d+:/.test(line)) address = null;
    const value = /^\s*Address:\s*(\S+)/.exec(line)?.[1];
    if (value !== undefined) address = value;
    const status = /^\s*Status:\s*(\S+)/.exec(line)?.[1];
    if (status === 'active' && address !== null && !NULL_V6.test(address)) {
      const ip = address.split('/')[0] ?? '';
      if (isIPv6(ip)) return ip;
    }
  }
  return null;
};

/** ipmitool itself failed (cannot reach the BMC, timed out, crashed), not just one channel. */
class IpmitoolFailed extends Error {}

const stderrOf = (error: AgentError): string =>
  typeof error.details.stderrTail === 'string' ? error.details.stderrTail : '';

/**
 * A refusal for this channel only: it exited on its own with a channel complaint. Every other
 * failure (timeout, signal, the device that cannot be opened) means ipmitool does not work here.
 */
const isChannelRefusal = (error: unknown): boolean =>
  AgentError.is(error) &&
  error.code === 'TOOL_FAILED' &&
  error.details.timedOut === false &&
  error.details.signal === null &&
  /not a LAN channel|Invalid channel/i.test(stderrOf(error)) &&
  !/Could not open device/i.test(stderrOf(error));

const isHardFailure = (error: unknown): boolean =>
  !AgentError.is(error) ||
  error.code !== 'TOOL_FAILED' ||
  error.details.timedOut === true ||
  error.details.signal !== null;

/** Output of `ipmitool lan print <ch>`, null for a channel that is not a LAN channel. */
const lanPrint = async (tools: Tools, channel: number): Promise<string | null> => {
  try {
    return (
      await tools.run('ipmitool', ['lan', 'print', String(channel)], { timeoutMs: IPMITOOL_TIMEOUT_MS })
    ).stdout;
  } catch (error) {
    tools.signal?.throwIfAborted();
    if (isChannelRefusal(error)) return null;
    throw new IpmitoolFailed('ipmitool failed', { cause: error });
  }
};

/** `lan6 print` parameters are optional: a BMC without them answers with an error, which is "none". */
const lan6Print = async (tools: Tools, channel: number, parameter: string): Promise<string | null> => {
  try {
    return (
      await tools.run('ipmitool', ['lan6', 'print', String(channel), parameter], {
        timeoutMs: IPMITOOL_TIMEOUT_MS,
      })
    ).stdout;
  } catch (error) {
    tools.signal?.throwIfAborted();
    if (isHardFailure(error)) throw new IpmitoolFailed('ipmitool failed', { cause: error });
    return null;
  }
};

/** IPA's get_bmc_v6address: the first channel with IPv6 enabled and an address, dynamic first. */
const findV6Address = async (tools: Tools, channels: number[]): Promise<string | null> => {
  try {
    for (const channel of channels) {
      const enables = parseLan6Enables((await lan6Print(tools, channel, 'enables')) ?? '');
      if (enables !== 'ipv6' && enables !== 'both') continue;
      const address =
        parseLan6Address((await lan6Print(tools, channel, 'dynamic_addr')) ?? '') ??
        parseLan6Address((await lan6Print(tools, channel, 'static_addr')) ?? '');
      if (address !== null) return address;
    }
  } catch (error) {
    if (!(error instanceof IpmitoolFailed)) throw error;
  }
  return null;
};

/**
 * The BMC's addresses, asked of the BMC with ipmitool only when both ipmitool and a BMC device
 * node exist (otherwise IPA's "not found" values, without bmc_mac). One `lan print` per channel
 * gives both the address and the MAC, and the scan stops at the first channel that has both;
 * IPA scans twice. A channel whose address is 0.0.0.0 is disabled and skipped, as in IPA. When
 * ipmitool fails, bmc_mac is null, as in IPA.
 */
export const collectBmc = async (paths: HardwarePaths, tools: Tools): Promise<BmcInventory> => {
  const [device, tool] = await Promise.all([hasBmcDevice(paths), tools.has('ipmitool')]);
  if (!device || !tool) return { ...NOT_FOUND };

  let address: string | null = null;
  let mac: string | null = null;
  const notLan = new Set<number>();
  try {
    for (const channel of CHANNELS) {
      const output = await lanPrint(tools, channel);
      if (output === null) {
        notLan.add(channel);
        continue;
      }
      const found = parseLanPrint(output);
      if (found.ip === null || !isIPv4(found.ip) || found.ip === '0.0.0.0') continue;
      address ??= found.ip;
      if (mac === null && found.mac !== null && MAC.test(found.mac) && found.mac !== NULL_MAC) {
        mac = found.mac.toLowerCase();
      }
      if (mac !== null) break;
    }
  } catch (error) {
    if (!(error instanceof IpmitoolFailed)) throw error;
    return {
      bmc_address: address ?? NOT_FOUND.bmc_address,
      bmc_v6address: NOT_FOUND.bmc_v6address,
      bmc_mac: null,
    };
  }

  const v6 = await findV6Address(
    tools,
    CHANNELS.filter((channel) => !notLan.has(channel)),
  );
  return {
    bmc_address: address ?? NOT_FOUND.bmc_address,
    bmc_v6address: v6 ?? NOT_FOUND.bmc_v6address,
    ...(mac === null ? {} : { bmc_mac: mac }),
  };
};
