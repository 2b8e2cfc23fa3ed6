/**
 * The ramdisk end to end (issue 6): `make ramdisk`'s kernel and initramfs PXE-booted in QEMU
 * without KVM (SeaBIOS, Debian's iPXE ROM, the script over TFTP, kernel and initramfs over HTTP),
 * on user networking with restrict=on whose only way out is a relay to this process's servers on
 * 127.0.0.1. The reference conductor drives the real agent in the VM: hello, inventory (checked
 * against what QEMU was given, and an LLDP neighbour on a second NIC fed real frames),
 * image.write onto the virtio disk, power-off; then the disk file is checked on the host. A second
 * boot first shows that the host's loopback is out of the guest's reach except through the relays,
 * then writes with a wrong checksum, which must leave no partition table at either end.
 *
 * Each boot has 120 s to say hello; QEMU is stopped whatever happens. `make e2e` builds the
 * ramdisk first; without it (or without QEMU) this file skips and says why.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, open, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import type { CommandRecord } from '../../agent/protocol/schema.js';
import type { Inventory } from '../../agent/hardware/generic/inventory/types.js';
import { GIB, haveTools, MIB, sh } from '../support/loop-lab.js';
import {
  firstDifference,
  makeDiskImage,
  PxeLab,
  pxeLabSkipReason,
  readAt,
  type DiskImage,
  type PxeSession,
} from '../support/pxe-lab.js';
import { DEFAULT_MACS, e2eLogDir, type LldpNeighbour } from '../support/qemu.js';

const skip = (await pxeLabSkipReason()) ?? (await haveTools('wipefs')) ?? false;
if (skip) process.stderr.write(`# skipping the PXE end-to-end test: ${skip}\n`);

const BOOT_TIMEOUT_MS = 120_000;
const DISK_BYTES = 2 * GIB;
const DISK_SERIAL = 'bma-e2e-disk';
const MEMORY_MIB = 1024;
const CPUS = 1;
const IMAGE_BYTES = 64 * MIB;
const MARKER = `bm-agent e2e marker ${new Date().toISOString()}\n`;
const SWITCH: LldpNeighbour = {
  chassisMac: '02:00:00:e2:e0:ff',
  portId: 'swp7',
  portDescription: 'e2e uplink',
  systemName: 'bma-e2e-switch',
  systemDescription: 'frames sent into -netdev dgram by the e2e test',
};
const echoConsole = process.env.BMA_E2E_CONSOLE === '1';

/** What would make the disk bootable or partitioned, as found on the host. */
const signatures = async (file: string, size: number): Promise<string[]> => {
  const found: string[] = [];
  if ((await readAt(file, 512, 8)).toString('latin1') === 'EFI PART')
    found.push('primary GPT header (LBA 1)');
  if ((await readAt(file, size - 512, 8)).toString('latin1') === 'EFI PART')
    found.push('backup GPT header (last LBA)');
  if ((await readAt(file, 510, 2)).equals(Buffer.from([0x55, 0xaa]))) found.push('MBR boot signature');
  const wipefs = (await sh('wipefs', ['--no-act', '--noheadings', '--output', 'TYPE,OFFSET', file])).trim();
  if (wipefs !== '') found.push(...wipefs.split('\n').map((line) => `wipefs: ${line.trim()}`));
  return found;
};

// The tests, not the suite, carry the skip: a skipped test shows in the totals with its reason.
describe('the ramdisk PXE-booted under QEMU, driven by the reference conductor', () => {
  let work: string;
  let lab: PxeLab;
  let image: DiskImage;
  let imageUrl: string;

  before(async () => {
    if (skip) return;
    work = await mkdtemp(path.join(os.tmpdir(), 'bma-e2e-'));
    lab = await PxeLab.start();
    image = await makeDiskImage(work, { bytes: IMAGE_BYTES, marker: MARKER });
    imageUrl = lab.publish('/disk.img', image.file);
  });

  after(async () => {
    await lab?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  /** A fresh conductor and a VM with a fresh 2 GiB disk, booted via PXE to the agent's hello. */
  const bootToHello = async (
    t: TestContext,
    name: string,
    options: { prepareDisk?: (disk: string) => Promise<void>; kernelArgs?: string[] } = {},
  ): Promise<PxeSession> => {
    const session = await lab.session({
      runDir: path.join(work, name),
      diskBytes: DISK_BYTES,
      diskSerial: DISK_SERIAL,
      prepareDisk: options.prepareDisk,
      kernelArgs: options.kernelArgs,
      cpus: CPUS,
      memoryMiB: MEMORY_MIB,
      onLine: echoConsole
        ? (line) => process.stderr.write(`# [${(line.at / 1000).toFixed(2)}] ${line.text}\n`)
        : undefined,
    });
    const { vm } = session;
    // QEMU goes first, then the services it was using; and the timings print however the test ended.
    t.after(async () => {
      await session.stop();
      const report = vm.formatPhases(`${name}: PXE boot`);
      const kept = path.join(e2eLogDir(), `pxe-${name}.console.log`);
      await mkdir(e2eLogDir(), { recursive: true });
      await copyFile(vm.consoleLog, kept);
      for (const line of [...report.split('\n'), `console: ${kept}`]) t.diagnostic(line);
    });
    const hello = await session.waitForHello(BOOT_TIMEOUT_MS);
    assert.deepEqual(
      [...hello.params.macs].sort(),
      [...DEFAULT_MACS].sort(),
      'the hello names both NICs QEMU was given',
    );
    assert.equal(hello.params.bootif, DEFAULT_MACS[0], 'BOOTIF from iPXE reached the agent');
    return session;
  };

  const runCommand = async (
    session: PxeSession,
    name: string,
    params: Record<string, unknown>,
    timeoutMs: number,
    phase = name,
  ): Promise<CommandRecord> => {
    const outcome = await session.startCommand(name, params);
    assert.equal(
      outcome.error,
      undefined,
      `command.run ${name} was refused: ${JSON.stringify(outcome.error)}`,
    );
    return session.waitForResult(outcome.commandId, timeoutMs, phase);
  };

  const powerOff = async (t: TestContext, session: PxeSession): Promise<void> => {
    const record = await runCommand(session, 'system.power_off', {}, 60_000);
    assert.equal(record.status, 'SUCCEEDED', JSON.stringify(record.error));
    const exit = await session.vm.waitForExit(60_000);
    t.diagnostic(`QEMU exited with ${JSON.stringify(exit)} after the power-off`);
    assert.equal(exit.code, 0, 'the guest powered itself off (poweroff -f), QEMU was not killed');
  };

  it(
    'boots via PXE, reports the VM and its LLDP neighbour, writes the image byte for byte, powers off',
    { skip, timeout: 8 * 60_000 },
    async (t) => {
      const session = await bootToHello(t, 'boot1');
      const { conductor } = session;
      // A switch sends its LLDPDU periodically; the frames before the agent listens are lost, as on a real port.
      const stopLldp = session.sendLldp(SWITCH, 500, 240);

      const inventoryRecord = await runCommand(
        session,
        'inventory.collect',
        { lldp: true, lldp_timeout_s: 10 },
        90_000,
      );
      stopLldp();
      assert.equal(inventoryRecord.status, 'SUCCEEDED', JSON.stringify(inventoryRecord.error));
      const inventory = (inventoryRecord.result as { inventory: Inventory }).inventory;
      assert.equal(inventory.cpu.count, CPUS, 'CPU count');
      const memTotal = inventory.memory.total ?? 0;
      assert.ok(
        memTotal > 0.85 * MEMORY_MIB * MIB && memTotal <= MEMORY_MIB * MIB,
        `memory.total ${memTotal} is roughly ${MEMORY_MIB} MiB`,
      );
      if (inventory.memory.physical_mb !== null) assert.equal(inventory.memory.physical_mb, MEMORY_MIB);
      const vda = inventory.disks.find((disk) => disk.name === '/dev/vda');
      assert.ok(vda, `a disk vda in ${JSON.stringify(inventory.disks.map((disk) => disk.name))}`);
      assert.equal(vda.size, DISK_BYTES, 'vda is the 2 GiB disk file');
      const byMac = new Map(inventory.interfaces.map((nic) => [nic.mac_address, nic]));
      for (const mac of DEFAULT_MACS) assert.ok(byMac.has(mac), `a NIC with MAC ${mac}`);
      assert.equal(inventory.boot.pxe_interface, DEFAULT_MACS[0]);
      const pxeNic = byMac.get(DEFAULT_MACS[0]);
      assert.equal(pxeNic?.ipv4_address, '10.0.2.15', 'the PXE NIC has its DHCP lease');
      const lldpNic = byMac.get(DEFAULT_MACS[1]);
      assert.ok(
        lldpNic?.lldp && lldpNic.lldp.length > 0,
        `LLDP TLVs on ${lldpNic?.name}: ${JSON.stringify(lldpNic)}`,
      );
      assert.ok(
        lldpNic.lldp.some(
          ([type, hex]) => type === 5 && hex === Buffer.from(SWITCH.systemName).toString('hex'),
        ),
        'the raw TLVs hold the system name',
      );
      assert.equal(lldpNic.lldp_processed?.switch_system_name, SWITCH.systemName);
      assert.equal(lldpNic.lldp_processed?.switch_port_id, SWITCH.portId);
      assert.equal(lldpNic.lldp_processed?.switch_chassis_id, SWITCH.chassisMac);
      t.diagnostic(
        `inventory: ${inventory.cpu.count} CPU, ${(memTotal / MIB).toFixed(0)} MiB, ` +
          `disks ${inventory.disks.map((disk) => `${disk.name}=${disk.size} serial=${disk.serial ?? '-'}`).join(' ')}, ` +
          `NICs ${inventory.interfaces.map((nic) => `${nic.name}=${nic.mac_address}`).join(' ')}, ` +
          `LLDP on ${lldpNic.name}: ${lldpNic.lldp_processed?.switch_system_name} port ${lldpNic.lldp_processed?.switch_port_id}`,
      );

      const write = await runCommand(
        session,
        'image.write',
        {
          url: imageUrl,
          checksum: `sha256:${image.sha256}`,
          disk_format: 'raw',
          device: 'vda',
        },
        300_000,
      );
      assert.equal(write.status, 'SUCCEEDED', JSON.stringify(write.error));
      const written = write.result as Record<string, unknown>;
      assert.equal(written.bytes_written, IMAGE_BYTES);
      assert.equal(written.checksum_verified, true);
      assert.equal(written.checksum, `sha256:${image.sha256}`);
      t.diagnostic(
        `image.write: ${IMAGE_BYTES} bytes onto ${String(written.device)} in ${String(written.seconds)} s, ` +
          `${conductor.progress(write.command_id).length} progress frames`,
      );

      await powerOff(t, session);
      const difference = await firstDifference(image.file, session.disk, IMAGE_BYTES);
      assert.equal(difference, -1, `the disk differs from the image at byte ${difference}`);
    },
  );

  it(
    'a write with a wrong checksum fails with CHECKSUM_MISMATCH and leaves no partition table',
    { skip, timeout: 8 * 60_000 },
    async (t) => {
      const session = await bootToHello(t, 'boot2', {
        // The containment check below should fail fast, not after the default nine retries.
        kernelArgs: [
          'ipa-image-download-connection-retries=1',
          'ipa-image-download-connection-retry-interval=1',
        ],
        // The disk starts out holding the image, so a missing wipe would show.
        prepareDisk: async (disk) => {
          const handle = await open(disk, 'r+');
          try {
            const bytes = await readFile(image.file);
            await handle.write(bytes, 0, bytes.length, 0);
          } finally {
            await handle.close();
          }
          const before = await signatures(disk, DISK_BYTES);
          assert.ok(
            before.some((found) => found.startsWith('primary GPT')),
            `the disk is partitioned before: ${before.join('; ')}`,
          );
        },
      });

      // restrict=on: slirp's usual way to the host (10.0.2.2 is the host's 127.0.0.1) is closed,
      // though the boot server listens right there; only the relays lead out.
      const escape = await runCommand(
        session,
        'image.write',
        {
          url: `http://10.0.2.2:${lab.boot.port}/disk.img`,
          checksum: `sha256:${image.sha256}`,
          device: 'vda',
        },
        120_000,
        'escape-refused',
      );
      assert.equal(escape.status, 'FAILED');
      assert.equal(escape.error?.code, 'DOWNLOAD_FAILED', JSON.stringify(escape.error));
      t.diagnostic(`the host's 127.0.0.1 is out of the guest's reach: ${escape.error?.message ?? ''}`);

      const wrong = createHash('sha256').update('not the image').digest('hex');
      const write = await runCommand(
        session,
        'image.write',
        { url: imageUrl, checksum: `sha256:${wrong}`, device: 'vda' },
        300_000,
      );
      assert.equal(write.status, 'FAILED');
      assert.equal(write.error?.code, 'CHECKSUM_MISMATCH', JSON.stringify(write.error));
      assert.ok(
        (write.error?.details as { wiped?: unknown } | undefined)?.wiped,
        `the failure reports what it wiped: ${JSON.stringify(write.error?.details)}`,
      );
      t.diagnostic(`image.write failed as it should: ${write.error?.message ?? ''}`);

      await powerOff(t, session);
      const left = await signatures(session.disk, DISK_BYTES);
      assert.deepEqual(left, [], 'no partition table or boot signature survives');
    },
  );
});
