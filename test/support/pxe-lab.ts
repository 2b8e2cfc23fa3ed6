/**
 * The set-up shared by the PXE end-to-end tests and `make demo`: a partitioned disk image to write,
 * the boot server that serves it with the ramdisk, and per boot a QEMU VM with an empty sparse disk
 * and an LLDP-fed second NIC, with a fresh conductor (`session`) or without one (`bootVm`, for an
 * agent sent to Ironic). The callers keep what they check or show.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { CommandRecord } from '../../agent/protocol/schema.js';
import { BootServer } from './boot-server.js';
import { ReferenceConductor, type HelloRecord, type RpcOutcome } from './conductor.js';
import { haveTools, MIB, sh } from './loop-lab.js';
import {
  GUEST_HTTP_PORT,
  GUEST_SERVICE_HOST,
  lldpFrame,
  loadRamdisk,
  QemuVm,
  qemuSkipReason,
  waitForHello,
  type ConsoleLine,
  type GuestForward,
  type HostForward,
  type LldpNeighbour,
  type RamdiskArtefacts,
} from './qemu.js';

export const CONDUCTOR_PATH = '/v1/agent';

/** Why a PXE boot with an image to write cannot run here, or null when it can. */
export const pxeLabSkipReason = async (): Promise<string | null> =>
  (await qemuSkipReason('pxe')) ?? (await haveTools('sgdisk', 'mkfs.ext4'));

export interface DiskImage {
  file: string;
  sha256: string;
  bytes: number;
}

/**
 * A raw disk image in `dir`/disk.img: GPT with one partition holding an ext4 file system with
 * `marker.txt` and incompressible data (so a short write or a compressing shortcut would show).
 */
export const makeDiskImage = async (
  dir: string,
  options: { bytes?: number; marker: string; randomBytes?: number },
): Promise<DiskImage> => {
  const bytes = options.bytes ?? 64 * MIB;
  if (bytes % MIB !== 0 || bytes < 8 * MIB)
    throw new Error(`image size ${bytes}: a whole number of MiB, >= 8`);
  const scratch = path.join(dir, 'disk-image.parts');
  const content = path.join(scratch, 'content');
  await mkdir(content, { recursive: true });
  try {
    await writeFile(path.join(content, 'marker.txt'), options.marker);
    await writeFile(path.join(content, 'random.bin'), randomBytes(options.randomBytes ?? 8 * MIB));
    const filesystem = path.join(scratch, 'fs.img');
    // 1 MiB in front for the primary GPT and alignment, 1 MiB behind for the backup GPT.
    await sh('mkfs.ext4', ['-q', '-F', '-d', content, filesystem, `${bytes / MIB - 2}M`]);
    const file = path.join(dir, 'disk.img');
    const handle = await open(file, 'w');
    try {
      await handle.truncate(bytes);
      const fsBytes = await readFile(filesystem);
      await handle.write(fsBytes, 0, fsBytes.length, MIB);
    } finally {
      await handle.close();
    }
    // sgdisk touches only LBA 0-33 and the backup at the end: the file system at 1 MiB stays whole.
    await sh('sgdisk', ['-o', '-n', '1:2048:0', '-t', '1:8300', '-c', '1:bma-e2e', file]);
    const sha256 = createHash('sha256')
      .update(await readFile(file))
      .digest('hex');
    return { file, sha256, bytes };
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
};

/** An empty sparse file of `bytes`, the VM's disk. */
export const makeSparseFile = async (file: string, bytes: number): Promise<void> => {
  await writeFile(file, '');
  await truncate(file, bytes);
};

export const readAt = async (file: string, offset: number, length: number): Promise<Buffer> => {
  const handle = await open(file, 'r');
  try {
    const buffer = Buffer.alloc(length);
    await handle.read(buffer, 0, length, offset);
    return buffer;
  } finally {
    await handle.close();
  }
};

/** Offset of the first byte where the files differ within `length`, or -1. */
export const firstDifference = async (a: string, b: string, length: number): Promise<number> => {
  const [ha, hb] = await Promise.all([open(a, 'r'), open(b, 'r')]);
  try {
    const chunk = 4 * MIB;
    const ba = Buffer.alloc(chunk);
    const bb = Buffer.alloc(chunk);
    for (let offset = 0; offset < length; offset += chunk) {
      const want = Math.min(chunk, length - offset);
      const [ra, rb] = await Promise.all([ha.read(ba, 0, want, offset), hb.read(bb, 0, want, offset)]);
      if (ra.bytesRead !== want || rb.bytesRead !== want)
        return offset + Math.min(ra.bytesRead, rb.bytesRead);
      if (ba.subarray(0, want).equals(bb.subarray(0, want))) continue;
      for (let i = 0; i < want; i++) if (ba[i] !== bb[i]) return offset + i;
    }
    return -1;
  } finally {
    await Promise.all([ha.close(), hb.close()]);
  }
};

export interface PxeSessionOptions {
  /** Holds the VM's disk, console.log and the TFTP root; the caller owns and removes it. */
  runDir: string;
  diskBytes: number;
  diskSerial: string;
  cpus?: number;
  memoryMiB?: number;
  kernelArgs?: string[];
  /** Called with the empty disk file before QEMU opens it. */
  prepareDisk?: (disk: string) => Promise<void>;
  onLine?: (line: ConsoleLine) => void;
  pxeScript?: 'tftp' | 'http';
  heartbeatIntervalS?: number;
  /** More relays from 10.0.2.100 to services on the host's 127.0.0.1. */
  guestForwards?: readonly GuestForward[];
  /** Ports on the host's 127.0.0.1 that reach the guest. */
  hostForwards?: readonly HostForward[];
}

/** A boot without the reference conductor: the kernel arguments name what the agent talks to. */
export type PxeBootOptions = Omit<PxeSessionOptions, 'heartbeatIntervalS'>;

/** The boot server (ramdisk and published images) that every boot of a run shares. */
export class PxeLab {
  private constructor(
    readonly ramdisk: RamdiskArtefacts,
    readonly boot: BootServer,
  ) {}

  static async start(ramdisk?: RamdiskArtefacts): Promise<PxeLab> {
    const artefacts = ramdisk ?? (await loadRamdisk());
    return new PxeLab(artefacts, await BootServer.start());
  }

  /** Serves `file` to the guest; returns the URL the guest uses. */
  publish(urlPath: string, file: string): string {
    const normalised = urlPath.startsWith('/') ? urlPath : `/${urlPath}`;
    this.boot.publish(normalised, file);
    return `http://${GUEST_SERVICE_HOST}${GUEST_HTTP_PORT === 80 ? '' : `:${GUEST_HTTP_PORT}`}${normalised}`;
  }

  /** A fresh conductor and a VM booting via PXE onto a fresh sparse disk; not yet waited for. */
  async session(options: PxeSessionOptions): Promise<PxeSession> {
    const disk = await this.freshDisk(options);
    const conductor = await ReferenceConductor.start({
      heartbeatIntervalS: options.heartbeatIntervalS ?? 10,
      path: CONDUCTOR_PATH,
    });
    try {
      const vm = await this.startVm(options, disk, { port: conductor.port, path: CONDUCTOR_PATH });
      return new PxeSession(vm, conductor, disk);
    } catch (error) {
      await conductor.stop();
      throw error;
    }
  }

  /**
   * A VM booting via PXE onto a fresh sparse disk with no conductor URL on its command line (e.g.
   * an agent sent to Ironic by `ipa-api-url` in `kernelArgs`); not yet waited for.
   */
  async bootVm(options: PxeBootOptions): Promise<PxeBoot> {
    const disk = await this.freshDisk(options);
    return new PxeBoot(await this.startVm(options, disk, null), disk);
  }

  private async freshDisk(options: PxeBootOptions): Promise<string> {
    await mkdir(options.runDir, { recursive: true });
    const disk = path.join(options.runDir, 'disk.raw');
    await makeSparseFile(disk, options.diskBytes);
    await options.prepareDisk?.(disk);
    return disk;
  }

  private startVm(
    options: PxeBootOptions,
    disk: string,
    conductor: { port: number; path: string } | null,
  ): Promise<QemuVm> {
    return QemuVm.start({
      mode: 'pxe',
      ramdisk: this.ramdisk,
      runDir: options.runDir,
      boot: this.boot,
      conductor,
      disk: { file: disk, serial: options.diskSerial },
      kernelArgs: options.kernelArgs,
      cpus: options.cpus,
      memoryMiB: options.memoryMiB,
      onLine: options.onLine,
      pxeScript: options.pxeScript,
      guestForwards: options.guestForwards,
      hostForwards: options.hostForwards,
    });
  }

  async stop(): Promise<void> {
    await this.boot.stop();
  }
}

/** One boot without a conductor: its VM and the VM's disk file. */
export class PxeBoot {
  constructor(
    readonly vm: QemuVm,
    readonly disk: string,
  ) {}

  /** Ends QEMU and its relays; safe to call more than once. */
  stop(): Promise<void> {
    return this.vm.stop();
  }
}

/** One boot: its VM, its conductor and the VM's disk file. */
export class PxeSession {
  constructor(
    readonly vm: QemuVm,
    readonly conductor: ReferenceConductor,
    readonly disk: string,
  ) {}

  /** The agent's first accepted hello since QEMU started; fails early when the boot does. */
  waitForHello(timeoutMs: number): Promise<HelloRecord> {
    return waitForHello(this.vm, this.conductor, timeoutMs);
  }

  /** command.run, failing early when the boot does; the outcome may be a refusal. */
  startCommand(name: string, params: Record<string, unknown>): Promise<RpcOutcome & { commandId: string }> {
    return this.vm.guard(this.conductor.runCommand(name, params), `command.run ${name}`);
  }

  /** The command's record; marks `phase` on the VM's clock when it arrives. */
  async waitForResult(commandId: string, timeoutMs: number, phase: string): Promise<CommandRecord> {
    const record = await this.vm.guard(
      this.conductor.waitForResult(commandId, timeoutMs),
      `the result of ${phase}`,
    );
    this.vm.mark(phase);
    return record;
  }

  /** Runs a command to its record; a refused command.run is an error. */
  async runCommand(
    name: string,
    params: Record<string, unknown>,
    timeoutMs: number,
    phase = name,
  ): Promise<CommandRecord> {
    const outcome = await this.startCommand(name, params);
    if (outcome.error) throw new Error(`command.run ${name} was refused: ${JSON.stringify(outcome.error)}`);
    return this.waitForResult(outcome.commandId, timeoutMs, phase);
  }

  /**
   * A switch's LLDPDU into the second NIC every `intervalMs`, as a switch sends it: frames before
   * the agent listens are lost, as on a real port. Returns the function that stops it.
   */
  sendLldp(neighbour: LldpNeighbour, intervalMs = 500, maxFrames = 240): () => void {
    return this.vm.repeatFrame(lldpFrame(neighbour), intervalMs, maxFrames);
  }

  /** QEMU first, then the conductor it was talking to; safe to call more than once. */
  async stop(): Promise<void> {
    await this.vm.stop();
    await this.conductor.stop();
  }
}
