import { randomUUID } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import os from 'node:os';
import { procPath, sysPath, type HardwarePaths } from '../hardware/paths.js';

export interface AgentIdentity {
  bootId: string;
  hostname: string;
  macs: string[];
}

const readTrimmed = async (file: string): Promise<string | null> => {
  try {
    return (await readFile(file, 'utf8')).trim();
  } catch {
    return null;
  }
};

/** MACs of the physical interfaces, the way a conductor matches a node to its ports. */
export const listMacs = async (paths: HardwarePaths): Promise<string[]> => {
  const base = sysPath(paths, 'class', 'net');
  let names: string[];
  try {
    names = await readdir(base);
  } catch {
    return [];
  }
  const macs = await Promise.all(
    names
      .filter((name) => name !== 'lo')
      .map(async (name) => {
        const mac = await readTrimmed(`${base}/${name}/address`);
        return mac && /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(mac) && mac !== '00:00:00:00:00:00' ? mac : null;
      }),
  );
  return [...new Set(macs.filter((mac): mac is string => mac !== null))].sort();
};

let fallbackBootId: string | null = null;

/** The kernel's boot id tells the conductor whether the node rebooted since it last spoke to us. */
export const readBootId = async (paths: HardwarePaths): Promise<string> => {
  const bootId = await readTrimmed(procPath(paths, 'sys', 'kernel', 'random', 'boot_id'));
  if (bootId) return bootId;
  fallbackBootId ??= randomUUID();
  return fallbackBootId;
};

export const readIdentity = async (paths: HardwarePaths): Promise<AgentIdentity> => {
  const [bootId, macs] = await Promise.all([readBootId(paths), listMacs(paths)]);
  return { bootId, hostname: os.hostname(), macs };
};
