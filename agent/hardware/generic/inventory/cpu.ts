import os from 'node:os';
import { procPath, sysPath, type HardwarePaths } from '../../paths.js';
import { listDirectory, readAttribute, toInteger } from './sysfs.js';
import type { CpuInventory } from './types.js';

/** One "key: value" block of /proc/cpuinfo; on ARM the last block holds machine-wide lines. */
export type CpuinfoBlock = Map<string, string>;

export const parseCpuinfo = (text: string): CpuinfoBlock[] =>
  text
    .split(/\n[ \t]*\n/)
    .map((block) => {
      const fields: CpuinfoBlock = new Map();
      for (const line of block.split('\n')) {
        const colon = line.indexOf(':');
        if (colon <= 0) continue;
        const key = line.slice(0, colon).trim();
        // The first value wins: some kernels repeat keys within a block.
        if (key !== '' && !fields.has(key)) fields.set(key, line.slice(colon + 1).trim());
      }
      return fields;
    })
    .filter((fields) => fields.size > 0);

const isProcessor = (block: CpuinfoBlock): boolean => /^\d+$/.test(block.get('processor') ?? '');

// ARM cores name themselves by implementer and part number only; lscpu, IPA's source, maps them.
const ARM_PARTS: Record<string, string> = {
  '0xd03': 'Cortex-A53',
  '0xd07': 'Cortex-A57',
  '0xd08': 'Cortex-A72',
  '0xd09': 'Cortex-A73',
  '0xd0c': 'Neoverse-N1',
  '0xd40': 'Neoverse-V1',
  '0xd42': 'Cortex-A78AE',
  '0xd49': 'Neoverse-N2',
  '0xd4f': 'Neoverse-V2',
};

const firstValue = (blocks: CpuinfoBlock[], ...keys: string[]): string | null => {
  for (const key of keys) {
    for (const block of blocks) {
      const value = block.get(key);
      if (value) return value;
    }
  }
  return null;
};

const modelName = (blocks: CpuinfoBlock[]): string | null => {
  // x86 "model name", old ARM "Processor", MIPS "cpu model", POWER "cpu".
  const named = firstValue(blocks, 'model name', 'Processor', 'cpu model', 'cpu');
  if (named) return named;
  const implementer = firstValue(blocks, 'CPU implementer');
  const part = firstValue(blocks, 'CPU part')?.toLowerCase();
  return implementer === '0x41' && part ? (ARM_PARTS[part] ?? null) : null;
};

/**
 * The highest cpufreq maximum of any CPU, in MHz with four decimals as lscpu prints "CPU max MHz";
 * without cpufreq (most VMs) the "cpu MHz" of cpuinfo, verbatim, as older lscpu printed "CPU MHz".
 */
const frequency = async (
  paths: HardwarePaths,
  cpuDirectories: string[],
  blocks: CpuinfoBlock[],
): Promise<string | null> => {
  const maxima = await Promise.all(
    cpuDirectories.map(async (cpu) =>
      toInteger(
        await readAttribute(sysPath(paths, 'devices', 'system', 'cpu', cpu, 'cpufreq', 'cpuinfo_max_freq')),
      ),
    ),
  );
  const maxKhz = Math.max(0, ...maxima.filter((khz): khz is number => khz !== null));
  if (maxKhz > 0) return (maxKhz / 1000).toFixed(4);
  return firstValue(blocks, 'cpu MHz');
};

export const collectCpu = async (paths: HardwarePaths): Promise<CpuInventory> => {
  const [cpuinfo, arch, cpuEntries] = await Promise.all([
    readAttribute(procPath(paths, 'cpuinfo')),
    readAttribute(procPath(paths, 'sys', 'kernel', 'arch')),
    listDirectory(sysPath(paths, 'devices', 'system', 'cpu')),
  ]);
  const blocks = parseCpuinfo(cpuinfo ?? '');
  const processors = blocks.filter(isProcessor);
  const cpuDirectories = cpuEntries.filter((entry) => /^cpu\d+$/.test(entry));
  // Sockets are the distinct "physical id" values; kernels that do not print it have one socket.
  const sockets = new Set(
    processors.map((block) => block.get('physical id')).filter((id): id is string => id !== undefined),
  );
  const flags = firstValue(processors.length > 0 ? processors : blocks, 'flags', 'Features');
  return {
    model_name: modelName(processors.length > 0 ? [...processors, ...blocks] : blocks),
    frequency: await frequency(paths, cpuDirectories, processors),
    // cpuinfo lists the online CPUs, like lscpu's "CPU(s)"; sysfs is the fallback when it is unreadable.
    count: processors.length > 0 ? processors.length : cpuDirectories.length,
    // /proc/sys/kernel/arch is uname's machine field on recent kernels; older ones fall back to uname.
    architecture: arch ?? os.machine(),
    flags: flags === null ? [] : flags.split(/\s+/).filter((flag) => flag !== ''),
    socket_count: Math.max(1, sockets.size),
  };
};
