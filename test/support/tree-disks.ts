/**
 * A real loop device made visible in a prepared hardware tree (a simulated host's sys and dev
 * roots), so the agent pointed at that tree sees it as one of its disks and nothing of this
 * machine's own.
 */
import { mkdir, readFile, symlink } from 'node:fs/promises';
import path from 'node:path';
import type { HardwarePaths } from '../../agent/hardware/paths.js';
import { sh, type LoopDisk } from './loop-lab.js';

export const addLoopToTree = async (
  paths: Pick<HardwarePaths, 'sys' | 'dev'>,
  disk: LoopDisk,
): Promise<void> => {
  const [major, minor] = (await readFile(`/sys/class/block/${disk.kname}/dev`, 'utf8')).trim().split(':');
  if (!major || !minor) throw new Error(`no device number for ${disk.kname}`);
  await sh('mknod', ['-m', '600', path.join(paths.dev, disk.kname), 'b', major, minor]);
  await mkdir(path.join(paths.sys, 'class', 'block'), { recursive: true });
  await symlink(`/sys/class/block/${disk.kname}`, path.join(paths.sys, 'class', 'block', disk.kname));
};
