import type { ProgressUpdate } from '../../../commands/definition.js';
import { AgentError } from '../../../util/errors.js';
import { runProcess as defaultRunProcess, type RunProcess } from '../../../util/run-process.js';
import type { HardwarePaths } from '../../paths.js';
import { collectBmc } from './bmc.js';
import { collectBoot } from './boot.js';
import { collectCpu } from './cpu.js';
import { collectDisks, type DiskIdentitySource } from './disks.js';
import { collectInterfaces, type NetworkInterfacesSource } from './interfaces.js';
import { collectMemory } from './memory.js';
import { collectPciDevices } from './pci.js';
import { collectSystemVendor, readHostname } from './system.js';
import { createTools } from './tools.js';
import type { Inventory } from './types.js';

export type * from './types.js';
export {
  parseLsblkOutput,
  selectDisks,
  toDiskInventory,
  LsblkOutput,
  type DiskIdentitySource,
} from './disks.js';
export { collectInterfaces, listInterfaceNames, type NetworkInterfacesSource } from './interfaces.js';
export { parseCpuinfo } from './cpu.js';
export { parseDimmSizesMb } from './memory.js';
export { parseLanPrint, parseLan6Address, parseLan6Enables } from './bmc.js';

export interface CollectInventoryOptions {
  paths: HardwarePaths;
  /** The raw BOOTIF value from the kernel command line, reported as boot.pxe_interface. */
  bootif: string | null;
  signal?: AbortSignal;
  progress?: (update: ProgressUpdate) => void;
  /** Tests replace the process runner and the address table; the agent uses the real ones. */
  runProcess?: RunProcess;
  networkInterfaces?: NetworkInterfacesSource;
  /** PATH for lsblk, ipmitool and biosdevname; the agent's own PATH when absent. */
  toolPath?: string;
  /** Where disk WWNs and serials come from: udev's database with lsblk as fallback (default), or lsblk. */
  diskIdentity?: DiskIdentitySource;
}

/** The parts, in the order they are listed; each reports one progress step when it finishes. */
export const INVENTORY_PARTS = [
  'cpu',
  'memory',
  'disks',
  'interfaces',
  'bmc',
  'pci',
  'system',
  'boot',
] as const;

/**
 * Collects the inventory in IPA's shape. The parts run concurrently and read sysfs and procfs
 * with asynchronous file reads; the only program always run is one `lsblk -J -b -O`, plus
 * ipmitool where there is a BMC and biosdevname where it is installed. A part that fails fails
 * the whole collection (INVENTORY_FAILED with the cause) rather than sending a silently partial
 * inventory that a scheduler would trust; unreadable files are nulls, not failures.
 */
export const collectInventory = async (options: CollectInventoryOptions): Promise<Inventory> => {
  const { paths, bootif, signal, progress } = options;
  const tools = createTools(options.runProcess ?? defaultRunProcess, options.toolPath, signal);
  signal?.throwIfAborted();

  const total = INVENTORY_PARTS.length;
  let done = 0;
  const part = async <T>(phase: (typeof INVENTORY_PARTS)[number], collect: () => Promise<T>): Promise<T> => {
    let value: T;
    try {
      value = await collect();
    } catch (error) {
      signal?.throwIfAborted();
      if (AgentError.is(error) && error.code === 'INVENTORY_FAILED') throw error;
      const reason = error instanceof Error ? error.message : String(error);
      throw new AgentError('INVENTORY_FAILED', `collecting ${phase} failed: ${reason}`, {
        details: { part: phase, ...(AgentError.is(error) ? { cause_code: error.code } : {}) },
        cause: error,
      });
    }
    done += 1;
    progress?.({ phase, done, total, unit: 'steps' });
    return value;
  };

  const [cpu, memory, disks, interfaces, bmc, pci_devices, system, boot] = await Promise.all([
    part('cpu', () => collectCpu(paths)),
    part('memory', () => collectMemory(paths)),
    part('disks', () => collectDisks(paths, tools, options.diskIdentity)),
    part('interfaces', () => collectInterfaces(paths, tools, options.networkInterfaces)),
    part('bmc', () => collectBmc(paths, tools)),
    part('pci', () => collectPciDevices(paths)),
    part('system', async () => ({
      vendor: await collectSystemVendor(paths),
      hostname: await readHostname(paths),
    })),
    part('boot', () => collectBoot(paths, bootif)),
  ]);
  signal?.throwIfAborted();

  return {
    cpu,
    memory,
    disks,
    interfaces,
    ...bmc,
    system_vendor: system.vendor,
    boot,
    hostname: system.hostname,
    pci_devices,
    bluefield: [],
  };
};
