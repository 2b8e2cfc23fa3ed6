/**
 * Link state for LLDP capture: which interfaces to listen on, whether each is up and has carrier,
 * and bringing a down link up for the capture and back down afterwards. State is read from sysfs
 * (cheap, no child process); changes go through `ip`, the tool the ramdisk already carries.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { sysPath, type HardwarePaths } from '../hardware/paths.js';
import { AgentError } from '../util/errors.js';
import type { RunProcess } from '../util/run-process.js';

const IFF_UP = 0x1;
/** The kernel's IFNAMSIZ is 16 including the terminating NUL. */
const MAX_IFNAME_LENGTH = 15;

export const DEFAULT_CARRIER_WAIT_MS = 2000;
export const CARRIER_POLL_MS = 50;

export interface LinkState {
  /** IFF_UP: administratively up. */
  up: boolean;
  /** null when the kernel will not say (reading `carrier` of a down link fails with EINVAL). */
  carrier: boolean | null;
  operstate: string | null;
}

const readText = async (file: string): Promise<string | null> => {
  try {
    return (await readFile(file, 'utf8')).trim();
  } catch {
    return null;
  }
};

export const readLinkState = async (paths: HardwarePaths, name: string): Promise<LinkState> => {
  const [flags, carrier, operstate] = await Promise.all([
    readText(sysPath(paths, 'class/net', name, 'flags')),
    readText(sysPath(paths, 'class/net', name, 'carrier')),
    readText(sysPath(paths, 'class/net', name, 'operstate')),
  ]);
  const flagBits = flags === null ? Number.NaN : Number.parseInt(flags, 16);
  return {
    up: Number.isFinite(flagBits) && (flagBits & IFF_UP) !== 0,
    carrier: carrier === '1' ? true : carrier === '0' ? false : null,
    operstate,
  };
};

/**
 * The physical NICs: entries of class/net backed by a device (a `device` link), which leaves out
 * lo, bridges, bonds, VLANs and other virtual links, as IPA's inventory does.
 */
export const listPhysicalInterfaces = async (paths: HardwarePaths): Promise<string[]> => {
  let names: string[];
  try {
    names = await readdir(sysPath(paths, 'class/net'));
  } catch (error) {
    throw new AgentError(
      'LLDP_CAPTURE_FAILED',
      `cannot list network interfaces in ${sysPath(paths, 'class/net')}`,
      {
        cause: error,
      },
    );
  }
  const physical = await Promise.all(
    names.map(async (name) => {
      if (name === 'lo') return null;
      try {
        await stat(sysPath(paths, 'class/net', name, 'device'));
        return name;
      } catch {
        return null;
      }
    }),
  );
  return physical.filter((name): name is string => name !== null).sort();
};

export const isValidInterfaceName = (name: string): boolean =>
  name.length > 0 &&
  name.length <= MAX_IFNAME_LENGTH &&
  name !== '.' &&
  name !== '..' &&
  !/[/\s:]/.test(name) &&
  // A name starting with '-' would read as an option to ip and tcpdump.
  !name.startsWith('-');

/** Checks an explicit interface list: well-formed names that exist; duplicates are dropped. */
export const validateInterfaces = async (paths: HardwarePaths, names: string[]): Promise<string[]> => {
  const unique = [...new Set(names)];
  const malformed = unique.filter((name) => !isValidInterfaceName(name));
  if (malformed.length > 0) {
    throw new AgentError(
      'INVALID_PARAMS',
      `malformed interface name: ${malformed.map((n) => JSON.stringify(n)).join(', ')}`,
      {
        details: { interfaces: malformed },
      },
    );
  }
  const missing: string[] = [];
  await Promise.all(
    unique.map(async (name) => {
      try {
        await stat(sysPath(paths, 'class/net', name));
      } catch {
        missing.push(name);
      }
    }),
  );
  if (missing.length > 0) {
    missing.sort();
    throw new AgentError('INVALID_PARAMS', `no such network interface: ${missing.join(', ')}`, {
      details: { interfaces: missing },
    });
  }
  return unique;
};

/** `ip link set dev IF up|down`; throws the runProcess error (TOOL_NOT_FOUND, TOOL_FAILED). */
export const setLinkAdminState = async (
  run: RunProcess,
  name: string,
  state: 'up' | 'down',
  signal?: AbortSignal,
): Promise<void> => {
  await run('ip', ['link', 'set', 'dev', name, state], { timeoutMs: 10_000, killGraceMs: 1000, signal });
};

/**
 * Polls `carrier` until it reads 1 or `timeoutMs` passes; true when carrier came. Aborting the
 * signal ends the wait early with false (the caller no longer cares).
 */
export const waitForCarrier = async (
  paths: HardwarePaths,
  name: string,
  options: { timeoutMs?: number; pollMs?: number; signal?: AbortSignal } = {},
): Promise<boolean> => {
  const { timeoutMs = DEFAULT_CARRIER_WAIT_MS, pollMs = CARRIER_POLL_MS, signal } = options;
  const deadline = performance.now() + timeoutMs;
  const file = sysPath(paths, 'class/net', name, 'carrier');
  while (!signal?.aborted) {
    if ((await readText(file)) === '1') return true;
    const left = deadline - performance.now();
    if (left <= 0) return false;
    try {
      await sleep(Math.min(pollMs, left), undefined, { signal });
    } catch {
      return false;
    }
  }
  return false;
};
