/**
 * Real block devices for disk tests, and a prepared tree in which they are the only ones: loop
 * devices on sparse files in a temp dir, device nodes for them made with mknod in the tree's dev
 * root (same major:minor), and the tree's sysfs entries linked to the loops' own so size, ro,
 * holders and partitions are the kernel's. The agent pointed at this tree (BMA_SYS, BMA_DEV) can
 * never see this machine's own disks. Everything made is undone by cleanup(), whatever failed.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { access, mkdir, mkdtemp, open, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import type { HardwarePaths } from '../../agent/hardware/paths.js';
import { findOnPath } from '../../agent/util/run-process.js';

const exec = promisify(execFile);

export const MIB = 1024 * 1024;
export const GIB = 1024 * MIB;

export interface LoopDisk {
  /** The loop's real node, e.g. /dev/loop5 (for the tools the test itself runs). */
  real: string;
  kname: string;
  /** The node in the tree's dev root. */
  node: string;
  file: string;
  sizeBytes: number;
}

/** Runs a program and returns its stdout; a failure carries stderr in the message. */
export const sh = async (file: string, args: string[], input?: string): Promise<string> => {
  try {
    if (input === undefined) return (await exec(file, args, { encoding: 'utf8' })).stdout;
    return await new Promise<string>((resolve, reject) => {
      const child = execFile(file, args, { encoding: 'utf8' }, (error, stdout) =>
        error ? reject(error) : resolve(stdout),
      );
      child.stdin?.end(input);
    });
  } catch (error) {
    const stderr = (error as { stderr?: unknown }).stderr;
    throw new Error(`${[file, ...args].join(' ')} failed: ${String(stderr ?? error)}`, { cause: error });
  }
};

export const haveTools = async (...names: string[]): Promise<string | null> => {
  const missing: string[] = [];
  for (const name of names)
    if ((await findOnPath(name, `${process.env.PATH ?? ''}:/usr/sbin:/sbin`)) === null) missing.push(name);
  return missing.length > 0 ? `${missing.join(', ')} not installed` : null;
};

/** Why the loop-device tests cannot run here, or null when they can. */
export const loopLabSkipReason = async (): Promise<string | null> => {
  if (process.getuid?.() !== 0) return 'needs root (loop devices, mknod, mount)';
  const missing = await haveTools('losetup', 'lsblk', 'blockdev', 'mknod');
  if (missing) return missing;
  try {
    await access('/dev/loop-control');
  } catch {
    return 'no /dev/loop-control (loop driver missing)';
  }
  return null;
};

export class LoopLab {
  readonly paths: Required<HardwarePaths>;
  readonly loops: LoopDisk[] = [];
  private readonly mounts: string[] = [];
  private readonly swaps: string[] = [];
  private readonly dmNames: string[] = [];
  private readonly readOnly: string[] = [];

  private constructor(readonly dir: string) {
    this.paths = {
      sys: path.join(dir, 'sys'),
      dev: path.join(dir, 'dev'),
      // mounts and swaps are the machine's: they are what the refusals must see.
      proc: '/proc',
      run: path.join(dir, 'run'),
    };
  }

  static async create(label: string): Promise<LoopLab> {
    const dir = await mkdtemp(path.join(os.tmpdir(), `bma-disk-${label}-`));
    const lab = new LoopLab(dir);
    await mkdir(path.join(lab.paths.sys, 'class', 'block'), { recursive: true });
    await mkdir(lab.paths.dev, { recursive: true });
    await mkdir(path.join(lab.paths.run, 'udev', 'data'), { recursive: true });
    await mkdir(path.join(dir, 'files'));
    return lab;
  }

  /** A loop device on a sparse file; with `partitions`, partition scanning is on (losetup -P). */
  async addLoop(sizeBytes: number, options: { partitions?: boolean } = {}): Promise<LoopDisk> {
    const file = path.join(this.dir, 'files', `disk${this.loops.length}.img`);
    await writeFile(file, '');
    const handle = await open(file, 'r+');
    await handle.truncate(sizeBytes);
    await handle.close();
    // Another process may take the free loop between the lookup and the attach: try again.
    let real = '';
    for (let attempt = 0; ; attempt += 1) {
      try {
        real = (await sh('losetup', ['-f', '--show', ...(options.partitions ? ['-P'] : []), file])).trim();
        break;
      } catch (error) {
        if (attempt >= 4) throw error;
        await sleep(100 * (attempt + 1));
      }
    }
    const kname = path.basename(real);
    const disk: LoopDisk = { real, kname, node: path.join(this.paths.dev, kname), file, sizeBytes };
    this.loops.push(disk);
    await this.expose(kname);
    return disk;
  }

  /** Puts a block device in the tree: a node with its major:minor and a link to its sysfs entry. */
  async expose(kname: string): Promise<string> {
    const majMin = (await readFile(`/sys/class/block/${kname}/dev`, 'utf8')).trim();
    const [major = '', minor = ''] = majMin.split(':');
    const node = path.join(this.paths.dev, kname);
    await rm(node, { force: true });
    await sh('mknod', ['-m', '600', node, 'b', major, minor]);
    const entry = path.join(this.paths.sys, 'class', 'block', kname);
    await rm(entry, { force: true, recursive: true });
    await symlink(`/sys/class/block/${kname}`, entry);
    return node;
  }

  /**
   * Replaces a device's sysfs link with a copy of its attributes plus made-up holders: the
   * holder case where this kernel has neither device-mapper nor md.
   */
  async fakeHolders(kname: string, holders: string[]): Promise<void> {
    const real = `/sys/class/block/${kname}`;
    const entry = path.join(this.paths.sys, 'class', 'block', kname);
    await rm(entry, { force: true, recursive: true });
    await mkdir(path.join(entry, 'queue'), { recursive: true });
    for (const name of ['dev', 'size', 'ro'])
      await writeFile(path.join(entry, name), await readFile(path.join(real, name)));
    for (const name of ['logical_block_size', 'physical_block_size'])
      await writeFile(path.join(entry, 'queue', name), await readFile(path.join(real, 'queue', name)));
    for (const holder of holders) await mkdir(path.join(entry, 'holders', holder), { recursive: true });
  }

  /** Partitions a loop (GPT, sgdisk) and has the kernel add them (partprobe: this kernel may lack parsers). */
  async partition(disk: LoopDisk, layout: string[]): Promise<string[]> {
    await sh('sgdisk', ['-o', ...layout, disk.real]);
    await sh('partprobe', [disk.real]).catch(() => undefined);
    const count = layout.filter((arg) => arg === '-n').length;
    const names = Array.from({ length: count }, (_, index) => `${disk.kname}p${index + 1}`);
    for (let wait = 0; wait < 50; wait += 1) {
      const present = await Promise.all(
        names.map((name) =>
          readFile(`/sys/class/block/${name}/dev`).then(
            () => true,
            () => false,
          ),
        ),
      );
      if (present.every(Boolean)) break;
      await sleep(100);
    }
    for (const name of names) await this.expose(name);
    return names.map((name) => path.join('/dev', name));
  }

  async mount(device: string): Promise<string> {
    const target = await mkdtemp(path.join(this.dir, 'mnt-'));
    await sh('mount', [device, target]);
    this.mounts.push(target);
    return target;
  }

  async unmount(target: string): Promise<void> {
    await sh('umount', [target]);
    this.mounts.splice(this.mounts.indexOf(target), 1);
  }

  async swapOn(device: string): Promise<void> {
    await sh('mkswap', ['-q', device]);
    await sh('swapon', [device]);
    this.swaps.push(device);
  }

  async swapOff(device: string): Promise<void> {
    await sh('swapoff', [device]);
    this.swaps.splice(this.swaps.indexOf(device), 1);
  }

  async setReadOnly(disk: LoopDisk, readOnly: boolean): Promise<void> {
    await sh('blockdev', [readOnly ? '--setro' : '--setrw', disk.real]);
    if (readOnly) this.readOnly.push(disk.real);
    else this.readOnly.splice(this.readOnly.indexOf(disk.real), 1);
  }

  /** A device-mapper linear target over the whole loop; null when this kernel has no device-mapper. */
  async dmLinear(disk: LoopDisk): Promise<string | null> {
    if (await haveTools('dmsetup')) return null;
    const name = `bma-test-${path.basename(this.dir)}-${disk.kname}`;
    try {
      await sh('dmsetup', ['create', name, '--table', `0 ${disk.sizeBytes / 512} linear ${disk.real} 0`]);
    } catch {
      return null;
    }
    this.dmNames.push(name);
    return name;
  }

  /** Reads bytes straight from the loop device (what a reader of the disk sees). */
  async read(disk: LoopDisk, offset: number, length: number): Promise<Buffer> {
    const handle = await open(disk.real, 'r');
    try {
      const buffer = Buffer.alloc(length);
      const { bytesRead } = await handle.read(buffer, 0, length, offset);
      return buffer.subarray(0, bytesRead);
    } finally {
      await handle.close();
    }
  }

  /** Writes random bytes at an offset and returns them, to check later that nobody touched them. */
  async writeMarker(disk: LoopDisk, offset: number, length: number): Promise<Buffer> {
    const marker = randomBytes(length);
    const handle = await open(disk.real, 'r+');
    try {
      await handle.write(marker, 0, length, offset);
      await handle.sync();
    } finally {
      await handle.close();
    }
    return marker;
  }

  /** Undoes everything in reverse dependency order; each step is tried whatever the others did. */
  async cleanup(): Promise<void> {
    const attempt = async (what: () => Promise<unknown>) => {
      try {
        await what();
      } catch (error) {
        process.stderr.write(`# loop lab cleanup: ${String(error)}\n`);
      }
    };
    for (const target of this.mounts.splice(0).reverse()) await attempt(() => sh('umount', ['-l', target]));
    for (const device of this.swaps.splice(0)) await attempt(() => sh('swapoff', [device]));
    for (const name of this.dmNames.splice(0)) await attempt(() => sh('dmsetup', ['remove', name]));
    for (const device of this.readOnly.splice(0)) await attempt(() => sh('blockdev', ['--setrw', device]));
    // Detach only a loop still backed by our file: if something else detached ours, the number
    // may already serve another process.
    for (const disk of this.loops.splice(0))
      await attempt(async () => {
        const backing = (await readFile(`/sys/class/block/${disk.kname}/loop/backing_file`, 'utf8')).trim();
        if (backing === disk.file) await sh('losetup', ['-d', disk.real]);
        else process.stderr.write(`# loop lab cleanup: ${disk.real} is no longer ${disk.file}; left alone\n`);
      });
    await attempt(() => rm(this.dir, { recursive: true, force: true }));
  }
}
