/**
 * Checks before a push, each with its own error, so the conductor learns what to fix instead of a
 * bare errno after the DPU was already reset: the rshim device is there, this host owns it (not
 * the DPU's BMC), the card is not locked, and nobody else holds its boot device open.
 */
import { constants as fsConstants } from 'node:fs';
import { access, readdir, readFile, readlink, realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import { AgentError } from '../../../util/errors.js';
import { procPath, type HardwarePaths } from '../../paths.js';
import { readMisc, type RshimMisc } from './misc.js';

export interface BootHolder {
  pid: number;
  /** The process name from <proc>/<pid>/comm. */
  comm: string;
  fd: number;
}

export interface PreflightResult {
  bootPath: string;
  miscPath: string;
  misc: RshimMisc;
}

const O_ACCMODE = 3;
const SCAN_BATCH = 16;

const readText = async (file: string): Promise<string | null> => {
  try {
    return await readFile(file, 'utf8');
  } catch {
    return null;
  }
};

/**
 * Whether the descriptor may write. The real boot device allows one opener of any kind, but a FIFO
 * standing in for it always has a reader, which is no competitor. Unknown counts as a writer.
 */
const opensForWriting = async (paths: HardwarePaths, pid: string, fd: string): Promise<boolean> => {
  const info = await readText(procPath(paths, pid, 'fdinfo', fd));
  const flags = info === null ? null : /^flags:\s*([0-7]+)/m.exec(info);
  if (!flags?.[1]) return true;
  const mode = Number.parseInt(flags[1], 8) & O_ACCMODE;
  return mode === fsConstants.O_WRONLY || mode === fsConstants.O_RDWR;
};

/**
 * Processes that hold `bootPath` open for writing, from the fd links under the proc root.
 * Processes that vanish or cannot be inspected during the scan are skipped.
 */
export const findBootHolders = async (
  bootPath: string,
  paths: HardwarePaths,
  options: { excludePids?: readonly number[] } = {},
): Promise<BootHolder[]> => {
  const targets = new Set([path.resolve(bootPath)]);
  try {
    targets.add(await realpath(bootPath));
  } catch {
    // A missing boot is reported by the caller; the literal path is still worth scanning for.
  }
  const exclude = new Set(options.excludePids ?? []);
  let entries: string[];
  try {
    entries = await readdir(paths.proc);
  } catch {
    return [];
  }
  const scan = async (pid: string): Promise<BootHolder[]> => {
    let fds: string[];
    try {
      fds = await readdir(procPath(paths, pid, 'fd'));
    } catch {
      return [];
    }
    const found: BootHolder[] = [];
    for (const fd of fds) {
      let target: string;
      try {
        target = await readlink(procPath(paths, pid, 'fd', fd));
      } catch {
        continue;
      }
      if (!targets.has(target)) continue;
      if (!(await opensForWriting(paths, pid, fd))) continue;
      const comm = ((await readText(procPath(paths, pid, 'comm'))) ?? '').trim();
      found.push({ pid: Number(pid), comm: comm === '' ? '?' : comm, fd: Number(fd) });
    }
    return found;
  };
  const pids = entries.filter((pid) => /^\d+$/.test(pid) && !exclude.has(Number(pid)));
  const holders: BootHolder[] = [];
  // A few processes at a time: a busy host has thousands of descriptors to read.
  for (let i = 0; i < pids.length; i += SCAN_BATCH) {
    for (const found of await Promise.all(pids.slice(i, i + SCAN_BATCH).map(scan))) holders.push(...found);
  }
  return holders;
};

const exists = async (file: string): Promise<boolean> => {
  try {
    await access(file, fsConstants.F_OK);
    return true;
  } catch {
    return false;
  }
};

/**
 * Runs the checks for the rshim directory `rshimPath` (`<dev>/rshimN`) and returns what was read.
 * RSHIM_NOT_FOUND: no directory, boot or misc. RSHIM_OWNED_BY_BMC: DROP_MODE 1.
 * RSHIM_LOCKED: SECURE_NIC_MODE 1. RSHIM_BUSY: another process has boot open (pid and comm named).
 */
export const preflightRshim = async (
  rshimPath: string,
  paths: HardwarePaths,
  options: { excludePids?: readonly number[] } = {},
): Promise<PreflightResult> => {
  const bootPath = path.join(rshimPath, 'boot');
  const miscPath = path.join(rshimPath, 'misc');
  let isDir = false;
  try {
    isDir = (await stat(rshimPath)).isDirectory();
  } catch {
    isDir = false;
  }
  if (!isDir || !(await exists(bootPath))) {
    throw new AgentError(
      'RSHIM_NOT_FOUND',
      `${isDir ? `${bootPath} is missing` : `${rshimPath} is missing`}: the rshim daemon is not running, ` +
        'rshim is disabled for the host, or the card is in separated-host mode',
      { details: { rshim: rshimPath } },
    );
  }
  const misc = await readMisc(miscPath);
  if (misc.dropMode === true) {
    throw new AgentError(
      'RSHIM_OWNED_BY_BMC',
      `${rshimPath} is in drop mode: another rshim backend (the DPU's BMC) owns the card; ` +
        'hand it to the host (BMC HostRshim, or FORCE_CMD) first',
      { details: { rshim: rshimPath, devName: misc.devName } },
    );
  }
  if (misc.secureNicMode === true) {
    throw new AgentError(
      'RSHIM_LOCKED',
      `${rshimPath} belongs to a card in secure NIC mode: its PCIe rshim refuses boot streams`,
      { details: { rshim: rshimPath, devName: misc.devName } },
    );
  }
  const holders = await findBootHolders(bootPath, paths, options);
  const first = holders[0];
  if (first !== undefined) {
    throw new AgentError(
      'RSHIM_BUSY',
      `${bootPath} is held open by ${holders.map((h) => `${h.comm} (pid ${h.pid})`).join(', ')}; ` +
        'stop it (bfb-install, an rshim console) and retry',
      { details: { boot: bootPath, pid: first.pid, comm: first.comm, holders } },
    );
  }
  return { bootPath, miscPath, misc };
};
