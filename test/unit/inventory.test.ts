import assert from 'node:assert/strict';
import { access, mkdir, mkdtemp, readFile, rm, symlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { CommandContext, ProgressUpdate } from '../../agent/commands/definition.js';
import { inventoryCommands } from '../../agent/commands/inventory.js';
import { collectCpu } from '../../agent/hardware/generic/inventory/cpu.js';
import {
  INVENTORY_PARTS,
  collectInventory,
  parseDimmSizesMb,
  parseLan6Address,
  parseLanPrint,
  parseLsblkOutput,
  selectDisks,
  toDiskInventory,
  type CollectInventoryOptions,
  type Inventory,
  type NetworkInterfacesSource,
} from '../../agent/hardware/generic/inventory/index.js';
import { DEFAULT_PATHS, type HardwarePaths } from '../../agent/hardware/paths.js';
import { validate } from '../../agent/protocol/validate.js';
import { AgentError, CancelledError } from '../../agent/util/errors.js';
import { silentLogger } from '../../agent/util/logger.js';
import {
  runProcess,
  type ProcessResult,
  type RunProcess,
  type RunProcessOptions,
} from '../../agent/util/run-process.js';
import {
  CPU_FLAGS,
  CPU_MODEL,
  FAILING_IPMITOOL,
  buildServerTree,
  dmiTable,
  lsblkJson,
  put,
  writeLsblk,
  writeTool,
  type ServerTree,
} from '../support/sysfs-tree.js';

// Fixtures stay in the source tree; the compiled test runs from dist/test/unit.
const FIXTURES = fileURLToPath(new URL('../../../test/fixtures/lsblk/', import.meta.url));
const readFixture = (name: string): Promise<string> => readFile(path.join(FIXTURES, name), 'utf8');

let root: string;

before(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'bma-inventory-'));
});

after(async () => {
  await rm(root, { recursive: true, force: true });
});

/** The real process runner, recording every program the collection starts. */
const countingRunner = (): { run: RunProcess; argv: string[][] } => {
  const argv: string[][] = [];
  return {
    argv,
    run: (file, args, options) => {
      argv.push([file, ...args]);
      return runProcess(file, args, options);
    },
  };
};

/* ================================================================= the prepared server */

describe('collectInventory on a prepared two-socket server', () => {
  let tree: ServerTree;
  const BOOTIF = '0c:42:a1:5e:7f:10';

  before(async () => {
    const base = path.join(root, 'server');
    await mkdir(base);
    tree = await buildServerTree(base);
  });

  const collect = (overrides: Partial<CollectInventoryOptions> = {}): Promise<Inventory> =>
    collectInventory({
      paths: tree.paths,
      bootif: BOOTIF,
      toolPath: tree.toolPath,
      networkInterfaces: tree.addresses,
      ...overrides,
    });

  it('reports the whole inventory exactly, from one lsblk, one biosdevname and the BMC scan', async () => {
    const runner = countingRunner();
    const inventory = await collect({ runProcess: runner.run });
    const dev = (...parts: string[]) => path.join(tree.paths.dev, ...parts);
    const byPath = (name: string) => dev('disk', 'by-path', name);
    const nic = (
      fields: Partial<Inventory['interfaces'][number]> & { name: string; mac_address: string },
    ) => ({
      ipv4_address: null,
      ipv6_address: null,
      has_carrier: false,
      lldp: null,
      vendor: null,
      product: null,
      client_id: null,
      biosdevname: null,
      speed_mbps: null,
      pci_address: null,
      driver: null,
      ...fields,
    });
    const nvmeModel = 'SAMSUNG MZQL21T9HCJR-00A07';

    const expected: Inventory = {
      cpu: {
        model_name: CPU_MODEL,
        frequency: '3900.0000',
        count: 16,
        architecture: 'x86_64',
        flags: CPU_FLAGS.split(' '),
        socket_count: 2,
      },
      memory: { total: 329614748 * 1024, physical_mb: 8 * 32768 + 4 * 16384 },
      disks: [
        {
          name: dev('sda'),
          model: 'SAMSUNG MZ7L3480HCHQ-00A07',
          size: 480103981056,
          rotational: false,
          wwn: '0x5002538f42b6c1d0',
          serial: 'S664NE0R812345',
          vendor: 'ATA',
          wwn_with_extension: '0x5002538f42b6c1d0',
          wwn_vendor_extension: null,
          hctl: '0:0:0:0',
          by_path: byPath('pci-0000:00:17.0-ata-1'),
          logical_sectors: 512,
          physical_sectors: 4096,
          tran: 'sata',
        },
        {
          name: dev('sdb'),
          model: 'ST4000NM0035-1V4107',
          size: 4000787030016,
          rotational: true,
          wwn: '0x5000c500b1234567',
          serial: 'ZC1ABCDE',
          vendor: 'ATA',
          wwn_with_extension: '0x5000c500b1234567',
          wwn_vendor_extension: null,
          hctl: '1:0:0:0',
          by_path: byPath('pci-0000:00:17.0-ata-2'),
          logical_sectors: 512,
          physical_sectors: 4096,
          tran: 'sata',
        },
        {
          // udev gives NVMe namespaces an ID_WWN but no ID_WWN_WITH_EXTENSION; IPA reports that.
          name: dev('nvme0n1'),
          model: nvmeModel,
          size: 1920383410176,
          rotational: false,
          wwn: 'eui.36344730527012340025384500000001',
          serial: 'S64GNE0R701234',
          vendor: null,
          wwn_with_extension: null,
          wwn_vendor_extension: null,
          hctl: null,
          by_path: byPath('pci-0000:5e:00.0-nvme-1'),
          logical_sectors: 512,
          physical_sectors: 512,
          tran: 'nvme',
        },
        {
          // No udev record: lsblk's columns stand in.
          name: dev('nvme1n1'),
          model: nvmeModel,
          size: 1920383410176,
          rotational: false,
          wwn: 'eui.36344730527056780025384500000001',
          serial: 'S64GNE0R705678',
          vendor: null,
          wwn_with_extension: 'eui.36344730527056780025384500000001',
          wwn_vendor_extension: null,
          hctl: null,
          by_path: byPath('pci-0000:5f:00.0-nvme-1'),
          logical_sectors: 512,
          physical_sectors: 512,
          tran: 'nvme',
        },
      ],
      interfaces: [
        nic({ name: 'bond0', mac_address: 'ae:5c:27:41:9b:03' }),
        nic({
          name: 'eno1',
          mac_address: '3c:ec:ef:aa:bb:01',
          vendor: '0x8086',
          product: '0x1521',
          biosdevname: 'em1',
          pci_address: '0000:19:00.0',
          driver: 'igb',
        }),
        nic({
          name: 'ens1f0np0',
          mac_address: '0c:42:a1:5e:7f:10',
          // Only a link-local address: reported, without its scope.
          ipv6_address: 'fe80::e42:a1ff:fe5e:7f10',
          has_carrier: true,
          vendor: '0x15b3',
          product: '0xa2d6',
          biosdevname: 'p1p1',
          speed_mbps: 25000,
          pci_address: '0000:17:00.0',
          driver: 'mlx5_core',
        }),
        nic({
          name: 'ens1f0np0.100',
          mac_address: '0c:42:a1:5e:7f:10',
          ipv4_address: '192.0.2.17',
          // The global address wins over the link-local one listed before it.
          ipv6_address: '2001:db8:100::17',
          has_carrier: true,
          speed_mbps: 25000,
        }),
      ],
      bmc_address: '10.0.0.42',
      bmc_v6address: '2001:db8:42::42',
      bmc_mac: '3c:ec:ef:12:34:56',
      system_vendor: {
        product_name: 'SYS-1029U-TN10RT',
        serial_number: 'S412345X1234567',
        manufacturer: 'Supermicro',
        firmware: { vendor: 'American Megatrends Inc.', version: '3.4', build_date: '11/08/2022' },
      },
      boot: { current_boot_mode: 'uefi', pxe_interface: BOOTIF },
      hostname: 'node-17.example.org',
      pci_devices: [
        {
          address: '0000:00:00.0',
          vendor: '8086',
          device: '2020',
          class: '060000',
          revision: '07',
          driver: null,
        },
        {
          address: '0000:00:17.0',
          vendor: '8086',
          device: 'a182',
          class: '010601',
          revision: '09',
          driver: 'ahci',
        },
        {
          address: '0000:17:00.0',
          vendor: '15b3',
          device: 'a2d6',
          class: '020000',
          revision: '01',
          driver: 'mlx5_core',
        },
        {
          address: '0000:17:00.1',
          vendor: '15b3',
          device: 'a2d6',
          class: '020000',
          revision: '01',
          driver: null,
        },
        {
          address: '0000:17:00.2',
          vendor: '15b3',
          device: 'c2d5',
          class: '058000',
          revision: '01',
          driver: null,
        },
        {
          address: '0000:19:00.0',
          vendor: '8086',
          device: '1521',
          class: '020000',
          revision: '01',
          driver: 'igb',
        },
        {
          address: '0000:5e:00.0',
          vendor: '144d',
          device: 'a80a',
          class: '010802',
          revision: '00',
          driver: 'nvme',
        },
        {
          address: '0000:5f:00.0',
          vendor: '144d',
          device: 'a80a',
          class: '010802',
          revision: '00',
          driver: 'nvme',
        },
      ],
      bluefield: [],
    };
    assert.deepEqual(inventory, expected);

    // No program per device: lsblk and biosdevname once each; ipmitool walks channels 1-3 (1 is
    // unconfigured, 2 is not LAN, 3 answers) and asks for IPv6 where IPv6 may be enabled.
    const spawned = (tool: string) =>
      runner.argv.filter((argv) => argv[0] === tool).map((argv) => argv.join(' '));
    assert.deepEqual(spawned('lsblk'), ['lsblk -J -b -O']);
    assert.deepEqual(spawned('biosdevname'), ['biosdevname -d']);
    assert.deepEqual(spawned('ipmitool'), [
      'ipmitool lan print 1',
      'ipmitool lan print 2',
      'ipmitool lan print 3',
      'ipmitool lan6 print 1 enables',
      'ipmitool lan6 print 3 enables',
      'ipmitool lan6 print 3 dynamic_addr',
    ]);
    assert.equal(runner.argv.length, 8);
  });

  it('reports one progress step per part', async () => {
    const updates: ProgressUpdate[] = [];
    await collect({ progress: (update) => updates.push(update) });
    assert.equal(INVENTORY_PARTS.length, 8);
    assert.deepEqual(
      updates.map((update) => [update.done, update.total, update.unit]),
      [1, 2, 3, 4, 5, 6, 7, 8].map((done) => [done, 8, 'steps']),
    );
    assert.deepEqual(updates.map((update) => update.phase).sort(), [...INVENTORY_PARTS].sort());
  });

  it('takes WWNs and serials from udev (ID_* then DM_*), or from lsblk alone when asked', async () => {
    const run = path.join(root, 'server-udev-variant');
    await put(
      path.join(run, 'udev', 'data', 'b8:0'),
      [
        'E:ID_SERIAL=VENDOR_MODEL_LONGSERIAL',
        'E:ID_SERIAL_SHORT=UDEV-SHORT',
        'E:ID_WWN=0x600508b1001c4d2a',
        'E:ID_WWN_WITH_EXTENSION=0x600508b1001c4d2a7a3f2e1d0c0b0a09',
        'E:ID_WWN_VENDOR_EXTENSION=0x7a3f2e1d0c0b0a09',
        '',
      ].join('\n'),
    );
    await put(
      path.join(run, 'udev', 'data', 'b8:16'),
      'E:DM_SERIAL=mpath-serial\nE:DM_WWN=0x5000c5000000dead\n',
    );
    const pick = (inventory: Inventory, name: string) => {
      const disk = inventory.disks.find((entry) => entry.name.endsWith(name));
      return disk && [disk.serial, disk.wwn, disk.wwn_with_extension, disk.wwn_vendor_extension];
    };

    const fromUdev = await collect({ paths: { ...tree.paths, run } });
    assert.deepEqual(pick(fromUdev, 'sda'), [
      'UDEV-SHORT',
      '0x600508b1001c4d2a',
      '0x600508b1001c4d2a7a3f2e1d0c0b0a09',
      '0x7a3f2e1d0c0b0a09',
    ]);
    assert.deepEqual(pick(fromUdev, 'sdb'), ['mpath-serial', '0x5000c5000000dead', null, null]);

    const fromLsblk = await collect({ paths: { ...tree.paths, run }, diskIdentity: 'lsblk' });
    assert.deepEqual(pick(fromLsblk, 'sda'), [
      'S664NE0R812345',
      '0x5002538f42b6c1d0',
      '0x5002538f42b6c1d0',
      null,
    ]);
    assert.deepEqual(pick(fromLsblk, 'nvme0n1'), [
      'S64GNE0R701234',
      'eui.36344730527012340025384500000001',
      'eui.36344730527012340025384500000001',
      null,
    ]);
  });

  /** A PATH with the fake lsblk and, optionally, an ipmitool script. */
  const toolDir = async (name: string, ipmitool?: string): Promise<string> => {
    const directory = path.join(root, name);
    await writeLsblk(directory, lsblkJson());
    if (ipmitool !== undefined) await writeTool(directory, 'ipmitool', ipmitool);
    return directory;
  };

  it('reports bmc_mac null and the not-found addresses when ipmitool fails', async () => {
    const runner = countingRunner();
    const inventory = await collect({
      toolPath: await toolDir('bin-ipmi-broken', FAILING_IPMITOOL),
      runProcess: runner.run,
    });
    assert.equal(inventory.bmc_address, '0.0.0.0');
    assert.equal(inventory.bmc_v6address, '::/0');
    assert.ok('bmc_mac' in inventory);
    assert.equal(inventory.bmc_mac, null);
    // A BMC that cannot be opened is not asked again for every channel.
    assert.equal(runner.argv.filter((argv) => argv[0] === 'ipmitool').length, 1);
    assert.equal(inventory.disks.length, 4);
  });

  it('leaves bmc_mac out without ipmitool, and does not run ipmitool without a BMC device node', async () => {
    const withoutTool = await collect({ toolPath: await toolDir('bin-no-ipmitool') });
    assert.equal(withoutTool.bmc_address, '0.0.0.0');
    assert.equal(withoutTool.bmc_v6address, '::/0');
    assert.equal('bmc_mac' in withoutTool, false);
    assert.equal(withoutTool.interfaces.find((entry) => entry.name === 'eno1')?.biosdevname, null);

    const runner = countingRunner();
    const noDevice = await collect({
      paths: { ...tree.paths, dev: path.join(root, 'empty-dev') },
      runProcess: runner.run,
    });
    assert.equal('bmc_mac' in noDevice, false);
    assert.equal(noDevice.bmc_address, '0.0.0.0');
    assert.deepEqual(runner.argv.map((argv) => argv[0]).sort(), ['biosdevname', 'lsblk']);
  });

  it('fails with INVENTORY_FAILED naming the missing tool when lsblk is not on PATH', async () => {
    const empty = path.join(root, 'bin-empty');
    await mkdir(empty, { recursive: true });
    await assert.rejects(collect({ toolPath: empty }), (error) => {
      assert.ok(AgentError.is(error));
      assert.equal(error.code, 'INVENTORY_FAILED');
      assert.equal(
        error.message,
        'collecting disks failed: lsblk is not on PATH; it must be installed in the ramdisk',
      );
      assert.equal(error.details.part, 'disks');
      assert.equal(error.details.cause_code, 'TOOL_NOT_FOUND');
      assert.ok(AgentError.is(error.cause) && error.cause.code === 'TOOL_NOT_FOUND');
      return true;
    });
  });

  it('fails with INVENTORY_FAILED and the tool output when lsblk exits non-zero', async () => {
    const directory = path.join(root, 'bin-lsblk-broken');
    await writeTool(
      directory,
      'lsblk',
      "printf 'lsblk: failed to access sysfs directory: /sys/dev/block\\n' >&2; exit 32",
    );
    await assert.rejects(collect({ toolPath: directory }), (error) => {
      assert.ok(AgentError.is(error));
      assert.equal(error.code, 'INVENTORY_FAILED');
      assert.equal(error.details.cause_code, 'TOOL_FAILED');
      assert.match(
        error.message,
        /lsblk -J -b -O exited with code 32: lsblk: failed to access sysfs directory/,
      );
      return true;
    });
  });

  it('stops when cancelled', async () => {
    await assert.rejects(collect({ signal: AbortSignal.abort(new CancelledError()) }), CancelledError);
  });
});

/* ================================================================= odd and damaged trees */

describe('collectInventory on damaged sysfs', () => {
  it('reports unreadable files as nulls instead of failing', async () => {
    const base = path.join(root, 'damaged');
    const paths = {
      sys: path.join(base, 'sys'),
      dev: path.join(base, 'dev'),
      proc: path.join(base, 'proc'),
      run: path.join(base, 'run'),
    };
    const sys = (...parts: string[]) => path.join(paths.sys, ...parts);
    const bin = path.join(base, 'bin');
    await writeLsblk(bin, lsblkJson());
    // A directory where a file is expected (EISDIR) and dangling links (ENOENT) stand for the
    // attributes the kernel refuses to read (EINVAL on a down link, EACCES, EIO).
    await mkdir(sys('devices', 'pci0000:00', '0000:03:00.0', 'vendor'), { recursive: true });
    await put(sys('devices', 'pci0000:00', '0000:03:00.0', 'device'), '0x1572\n');
    await symlink('../../../bus/pci/drivers/i40e', sys('devices', 'pci0000:00', '0000:03:00.0', 'driver'));
    await mkdir(sys('bus', 'pci', 'devices'), { recursive: true });
    await symlink('../../../devices/pci0000:00/0000:03:00.0', sys('bus', 'pci', 'devices', '0000:03:00.0'));
    await put(sys('class', 'net', 'eth0', 'address'), '52:54:00:aa:bb:01\n');
    await mkdir(sys('class', 'net', 'eth0', 'speed'), { recursive: true });
    await symlink('nowhere', sys('class', 'net', 'eth0', 'carrier'));
    await symlink('../../../devices/pci0000:00/0000:03:00.0', sys('class', 'net', 'eth0', 'device'));
    // A NIC whose address cannot be read is left out, as IPA leaves it out.
    await mkdir(sys('class', 'net', 'eth1'), { recursive: true });
    await symlink('../../../devices/pci0000:00/0000:03:00.0', sys('class', 'net', 'eth1', 'device'));
    // An IPoIB port: 20-byte hardware address, reported as a 6-byte MAC and a DHCP client id.
    await put(
      sys('class', 'net', 'ib0', 'address'),
      'a0:00:00:27:fe:80:00:00:00:00:00:00:7c:fe:90:03:00:29:26:52\n',
    );
    await put(sys('class', 'net', 'ib0', 'carrier'), '1\n');
    await put(sys('class', 'net', 'ib0', 'speed'), '100000\n');
    await symlink('../../../devices/pci0000:00/0000:03:00.0', sys('class', 'net', 'ib0', 'device'));
    await mkdir(sys('class', 'dmi', 'id', 'product_name'), { recursive: true });
    await put(sys('class', 'dmi', 'id', 'sys_vendor'), '\n');
    // A truncated SMBIOS table: physical_mb falls back to the memory blocks.
    await put(sys('firmware', 'dmi', 'tables', 'DMI'), dmiTable().subarray(0, 30));
    await put(sys('devices', 'system', 'memory', 'block_size_bytes'), '8000000\n');
    await mkdir(sys('devices', 'system', 'memory', 'memory0'), { recursive: true });
    await mkdir(sys('devices', 'system', 'memory', 'memory1'), { recursive: true });
    await mkdir(sys('devices', 'system', 'cpu', 'cpu0', 'cpufreq', 'cpuinfo_max_freq'), { recursive: true });
    await mkdir(sys('devices', 'system', 'cpu', 'cpu1'), { recursive: true });
    await mkdir(path.join(paths.proc, 'cpuinfo'), { recursive: true });
    await mkdir(path.join(paths.proc, 'meminfo'), { recursive: true });

    const inventory = await collectInventory({
      paths,
      bootif: null,
      toolPath: bin,
      networkInterfaces: () => ({}),
    });
    assert.deepEqual(
      { ...inventory.cpu, architecture: null },
      { model_name: null, frequency: null, count: 2, architecture: null, flags: [], socket_count: 1 },
    );
    assert.deepEqual(inventory.memory, { total: null, physical_mb: 256 });
    assert.deepEqual(
      inventory.interfaces.map((nic) => [
        nic.name,
        nic.mac_address,
        nic.client_id,
        nic.has_carrier,
        nic.speed_mbps,
      ]),
      [
        ['eth0', '52:54:00:aa:bb:01', null, false, null],
        [
          'ib0',
          '7c:fe:90:29:26:52',
          'ff:00:00:00:00:00:02:00:00:02:c9:00:7c:fe:90:03:00:29:26:52',
          true,
          100000,
        ],
      ],
    );
    assert.equal(inventory.interfaces[0]?.vendor, null);
    assert.equal(inventory.interfaces[0]?.product, '0x1572');
    assert.equal(inventory.interfaces[0]?.driver, 'i40e');
    assert.deepEqual(inventory.pci_devices, [
      { address: '0000:03:00.0', vendor: null, device: '1572', class: null, revision: null, driver: 'i40e' },
    ]);
    assert.deepEqual(inventory.system_vendor, {
      product_name: null,
      serial_number: null,
      manufacturer: null,
      firmware: { vendor: null, version: null, build_date: null },
    });
    // Disks come from lsblk; with no sysfs or udev behind them, lsblk's own columns are used.
    assert.deepEqual(
      inventory.disks.map((disk) => [path.basename(disk.name), disk.vendor, disk.hctl]),
      [
        ['sda', 'ATA', '0:0:0:0'],
        ['sdb', 'ATA', '1:0:0:0'],
        ['nvme0n1', null, null],
        ['nvme1n1', null, null],
      ],
    );
  });

  it('reads ARM cpuinfo: model from the part number, Features as flags, one socket', async () => {
    const base = path.join(root, 'arm');
    // A BlueField-2's Arm cores as /proc/cpuinfo lists them.
    const block = (n: number) =>
      [
        `processor\t: ${n}`,
        'BogoMIPS\t: 400.00',
        'Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid',
        'CPU implementer\t: 0x41',
        'CPU architecture: 8',
        'CPU variant\t: 0x0',
        'CPU part\t: 0xd08',
        'CPU revision\t: 3',
      ].join('\n');
    await put(path.join(base, 'proc', 'cpuinfo'), `${[0, 1, 2, 3, 4, 5, 6, 7].map(block).join('\n\n')}\n\n`);
    await put(path.join(base, 'proc', 'sys', 'kernel', 'arch'), 'aarch64\n');
    const cpu = await collectCpu({ sys: path.join(base, 'sys'), dev: base, proc: path.join(base, 'proc') });
    assert.deepEqual(cpu, {
      model_name: 'Cortex-A72',
      frequency: null,
      count: 8,
      architecture: 'aarch64',
      flags: ['fp', 'asimd', 'evtstrm', 'aes', 'pmull', 'sha1', 'sha2', 'crc32', 'cpuid'],
      socket_count: 1,
    });
  });
});

/* ================================================================= parsers */

describe('inventory parsers', () => {
  it('sums SMBIOS memory devices: word sizes, KiB sizes, extended sizes; empty slots skipped', () => {
    const perCpu = [32768, 32768, 32768, 32768, 16384, 16384];
    assert.deepEqual(parseDimmSizesMb(dmiTable()), [...perCpu, ...perCpu]);
    const device = (size: number, extended = 0) => {
      const structure = Buffer.alloc(0x28 + 2);
      structure.writeUInt8(17, 0);
      structure.writeUInt8(0x28, 1);
      structure.writeUInt16LE(size, 0x0c);
      structure.writeUInt32LE(extended, 0x1c);
      return structure;
    };
    const table = Buffer.concat([
      device(0x8000 | 512),
      device(0x7fff, 65536),
      device(0xffff),
      device(0),
      device(8192),
    ]);
    assert.deepEqual(parseDimmSizesMb(table), [0.5, 65536, 8192]);
    // A length that runs past the end stops the walk without throwing.
    assert.deepEqual(parseDimmSizesMb(Buffer.from([17, 0x28, 0, 0, 1, 2])), []);
  });

  it('reads ipmitool lan and lan6 output', () => {
    assert.deepEqual(
      parseLanPrint('IP Address Source       : DHCP Address\nIP Address              : 10.1.2.3\n'),
      {
        ip: '10.1.2.3',
        mac: null,
      },
    );
    const sets = [
      'IPv6 Static Address 0:',
      '    Enabled:        yes',
      '    Address:        ::/128',
      '    Status:         active',
      'IPv6 Static Address 1:',
      '    Enabled:        yes',
      '    Address:        2001:db8::9/64',
      '    Status:         disabled',
      'IPv6 Static Address 2:',
      '    Enabled:        yes',
      '    Address:        2001:db8::10/64',
      '    Status:         active',
    ].join('\n');
    assert.equal(parseLan6Address(sets), '2001:db8::10');
    assert.equal(parseLan6Address(''), null);
  });
});

/* ================================================================= lsblk */

describe('lsblk parsing', () => {
  let syntheticLsblk: string;
  before(async () => {
    syntheticLsblk = await readFixture('synthetic-mixed.json');
  });

  it('keeps the whole disk of a captured KVM listing and drops the empty zram device', async () => {
    const disks = selectDisks(parseLsblkOutput(await readFixture('kvm-virtio.json')));
    assert.deepEqual(
      disks.map((disk) => disk.kname),
      ['vda'],
    );
    assert.equal(disks[0]?.size, 274877906944);
    assert.equal(disks[0]?.rota, true);
  });

  it('follows IPA: disks, RAID arrays and multipath maps; no loop, zram, rom, empty or multipath members', () => {
    const disks = selectDisks(parseLsblkOutput(syntheticLsblk));
    assert.deepEqual(
      disks.map((disk) => disk.kname),
      ['sda', 'nvme0n1', 'sdb', 'md127', 'sdc', 'dm-0', 'sdf'],
    );
  });

  it('splits a 128-bit NAA WWN into the WWN and its vendor extension when there is no udev record', () => {
    const [sda] = selectDisks(parseLsblkOutput(syntheticLsblk));
    assert.ok(sda);
    assert.deepEqual(toDiskInventory(sda, DEFAULT_PATHS, new Map([['sda', '/dev/disk/by-path/x']])), {
      name: '/dev/sda',
      model: 'PERC H730P Mini',
      size: 480103981056,
      rotational: true,
      wwn: '0x6d0946606d8a2e00',
      serial: '0044f2a3b1c2d3e4',
      vendor: 'DELL',
      wwn_with_extension: '0x6d0946606d8a2e002a6f0b3c12345678',
      wwn_vendor_extension: '0x2a6f0b3c12345678',
      hctl: '0:2:0:0',
      by_path: '/dev/disk/by-path/x',
      logical_sectors: 512,
      physical_sectors: 4096,
      tran: 'sas',
    });
  });

  it('accepts the all-strings JSON of util-linux before 2.33', () => {
    const legacy = JSON.stringify({
      blockdevices: [
        { kname: 'sda', type: 'disk', size: '500107862016', rm: '0', rota: '1', model: 'ST500', wwn: null },
        { kname: 'sr0', type: 'rom', size: '1073741312', rm: '1', rota: '1' },
      ],
    });
    const disks = selectDisks(parseLsblkOutput(legacy)).map((disk) =>
      toDiskInventory(disk, DEFAULT_PATHS, new Map()),
    );
    assert.deepEqual(
      disks.map((disk) => [
        disk.name,
        disk.size,
        disk.rotational,
        disk.model,
        disk.wwn,
        disk.logical_sectors,
      ]),
      [['/dev/sda', 500107862016, true, 'ST500', null, null]],
    );
  });

  it('rejects output that is not JSON or not the expected shape with INVENTORY_FAILED', () => {
    const failsWith = (text: string, pattern: RegExp) =>
      assert.throws(
        () => parseLsblkOutput(text),
        (error) => AgentError.is(error) && error.code === 'INVENTORY_FAILED' && pattern.test(error.message),
      );
    failsWith('lsblk: unknown column', /not JSON/);
    failsWith('{"devices": []}', /lsblk/);
    failsWith(
      '{"blockdevices": [{"kname": "sda", "type": "disk", "size": -1}]}',
      /lsblk\.blockdevices\.0\.size/,
    );
    failsWith('{"blockdevices": [{"kname": "..", "type": "disk", "size": 1}]}', /kname/);
    failsWith('{"blockdevices": [{"kname": "../sda", "type": "disk", "size": 1}]}', /kname/);
  });
});

/* ================================================================= a small tree with injected lsblk */

describe('collectInventory with an injected process runner', () => {
  let paths: HardwarePaths;
  let syntheticLsblk: string;

  const fakeLsblk = (stdout: string): RunProcess => {
    return async (file, args) => {
      const result: ProcessResult = {
        argv: [file, ...args],
        exitCode: 0,
        signal: null,
        timedOut: false,
        cancelled: false,
        durationMs: 1,
        stdout,
        stderr: '',
      };
      return result;
    };
  };

  const fakeAddresses: NetworkInterfacesSource = () => ({
    eth0: [
      {
        family: 'IPv6',
        address: 'fe80::5054:ff:feaa:bb01',
        netmask: 'ffff::',
        mac: '',
        internal: false,
        cidr: null,
        scopeid: 2,
      },
      {
        family: 'IPv4',
        address: '192.0.2.10',
        netmask: '255.255.255.0',
        mac: '',
        internal: false,
        cidr: null,
      },
      {
        family: 'IPv4',
        address: '192.0.2.11',
        netmask: '255.255.255.0',
        mac: '',
        internal: false,
        cidr: null,
      },
    ],
    br0: [
      {
        family: 'IPv4',
        address: '198.51.100.1',
        netmask: '255.255.255.0',
        mac: '',
        internal: false,
        cidr: null,
      },
    ],
  });

  before(async () => {
    const base = path.join(root, 'small');
    paths = {
      sys: path.join(base, 'sys'),
      dev: path.join(base, 'dev'),
      proc: path.join(base, 'proc'),
      run: path.join(base, 'run'),
    };
    const sys = (...parts: string[]) => path.join(paths.sys, ...parts);
    await put(sys('devices', 'pci0000:00', '0000:03:00.0', 'vendor'), '0x8086\n');
    await put(sys('devices', 'pci0000:00', '0000:03:00.0', 'device'), '0x1572\n');
    await put(sys('class', 'net', 'eth0', 'address'), '52:54:00:AA:BB:01\n');
    await put(sys('class', 'net', 'eth0', 'carrier'), '1\n');
    await put(sys('class', 'net', 'eth0', 'speed'), '10000\n');
    await symlink('../../../devices/pci0000:00/0000:03:00.0', sys('class', 'net', 'eth0', 'device'));
    await put(sys('class', 'net', 'br0', 'address'), '52:54:00:aa:bb:03\n');
    await put(sys('class', 'net', 'br0', 'carrier'), '1\n');
    await put(sys('class', 'net', 'lo', 'address'), '00:00:00:00:00:00\n');
    await put(sys('devices', 'system', 'memory', 'block_size_bytes'), '8000000\n');
    for (let block = 0; block < 4; block += 1) {
      await put(sys('devices', 'system', 'memory', `memory${block}`, 'online'), '1\n');
    }
    await mkdir(path.join(paths.dev, 'disk', 'by-path'), { recursive: true });
    await symlink('../../sda', path.join(paths.dev, 'disk', 'by-path', 'pci-0000:18:00.0-scsi-0:2:0:0'));
    await symlink(
      '../../sda1',
      path.join(paths.dev, 'disk', 'by-path', 'pci-0000:18:00.0-scsi-0:2:0:0-part1'),
    );
    await put(path.join(paths.proc, 'cpuinfo'), 'processor\t: 0\ncpu MHz\t\t: 2100.000\n');
    syntheticLsblk = await readFixture('synthetic-mixed.json');
  });

  const collect = () =>
    collectInventory({
      paths,
      bootif: '01-52-54-00-aa-bb-01',
      runProcess: fakeLsblk(syntheticLsblk),
      networkInterfaces: fakeAddresses,
      // No ipmitool or biosdevname: nothing but the injected lsblk may run.
      toolPath: path.join(root, 'no-such-bin'),
    });

  it('lists physical NICs only, with the first IPv4 address and the link-local IPv6 address', async () => {
    const { interfaces } = await collect();
    assert.deepEqual(interfaces, [
      {
        name: 'eth0',
        mac_address: '52:54:00:aa:bb:01',
        ipv4_address: '192.0.2.10',
        ipv6_address: 'fe80::5054:ff:feaa:bb01',
        has_carrier: true,
        lldp: null,
        vendor: '0x8086',
        product: '0x1572',
        client_id: null,
        biosdevname: null,
        speed_mbps: 10000,
        pci_address: '0000:03:00.0',
        driver: null,
      },
    ]);
  });

  it('reports disks under the dev root, by-path links, cpuinfo MHz and the memory blocks', async () => {
    const inventory = await collect();
    assert.equal(
      inventory.disks[0]?.by_path,
      path.join(paths.dev, 'disk', 'by-path', 'pci-0000:18:00.0-scsi-0:2:0:0'),
    );
    assert.equal(inventory.disks[0]?.name, path.join(paths.dev, 'sda'));
    const nvme = inventory.disks.find((disk) => disk.name.endsWith('nvme0n1'));
    assert.equal(nvme?.wwn, 'eui.36344730524012340025384500000001');
    assert.equal(nvme?.by_path, null);
    assert.equal(inventory.cpu.frequency, '2100.000');
    assert.equal(inventory.cpu.count, 1);
    assert.equal(inventory.memory.physical_mb, 512);
    assert.deepEqual(inventory.boot, { current_boot_mode: 'bios', pxe_interface: '01-52-54-00-aa-bb-01' });
    assert.deepEqual(inventory.pci_devices, []);
  });

  it('tolerates an empty tree', async () => {
    const empty = {
      sys: path.join(root, 'void', 'sys'),
      dev: path.join(root, 'void', 'dev'),
      proc: path.join(root, 'void'),
    };
    const inventory = await collectInventory({
      paths: { ...empty, run: path.join(root, 'void') },
      bootif: null,
      runProcess: fakeLsblk(syntheticLsblk),
      networkInterfaces: fakeAddresses,
      toolPath: path.join(root, 'no-such-bin'),
    });
    assert.deepEqual(inventory.interfaces, []);
    assert.deepEqual(inventory.memory, { total: null, physical_mb: null });
    assert.equal(inventory.cpu.count, 0);
    assert.equal(inventory.system_vendor.product_name, null);
    assert.equal(inventory.disks[0]?.by_path, null);
  });

  it('wraps a tool error in INVENTORY_FAILED with the part and the cause', async () => {
    const failing: RunProcess = async () => {
      throw new AgentError('TOOL_NOT_FOUND', 'lsblk is not on PATH; it must be installed in the ramdisk');
    };
    await assert.rejects(
      collectInventory({ paths, bootif: null, runProcess: failing, networkInterfaces: fakeAddresses }),
      (error) => {
        assert.ok(AgentError.is(error));
        assert.equal(error.code, 'INVENTORY_FAILED');
        assert.equal(error.details.part, 'disks');
        assert.match(error.message, /lsblk is not on PATH/);
        return true;
      },
    );
  });

  it('passes the tool PATH and the cancellation signal to the runner', async () => {
    const seen: Array<RunProcessOptions | undefined> = [];
    const controller = new AbortController();
    await collectInventory({
      paths,
      bootif: null,
      signal: controller.signal,
      toolPath: '/opt/tools',
      runProcess: async (file, args, options) => {
        seen.push(options);
        return fakeLsblk(syntheticLsblk)(file, args, options);
      },
      networkInterfaces: fakeAddresses,
    });
    assert.equal(seen.length, 1);
    assert.deepEqual(seen[0]?.env, { PATH: '/opt/tools' });
    assert.equal(seen[0]?.signal, controller.signal);
  });
});

/* ================================================================= the command and the real machine */

describe('inventory.collect command', () => {
  const [definition] = inventoryCommands({
    paths: DEFAULT_PATHS,
    bootif: null,
    collectLldp: false,
    lldpTimeoutS: 30,
  });

  it('validates its params', () => {
    assert.ok(definition);
    assert.equal(definition.name, 'inventory.collect');
    assert.equal(definition.exclusive, false);
    assert.ok(validate(definition.params, {}).ok);
    assert.ok(validate(definition.params, { lldp: true, lldp_timeout_s: 30 }).ok);
    assert.equal(validate(definition.params, { lldp_timeout_s: 601 }).ok, false);
    assert.equal(validate(definition.params, { lldp: 'yes' }).ok, false);
    assert.equal(validate(definition.params, { extra: 1 }).ok, false);
  });

  // The one run against the real machine: read-only (lsblk, sysfs, /proc), facts checked by structure only.
  it('collects a plausible inventory of this machine', async () => {
    assert.ok(definition);
    const updates: ProgressUpdate[] = [];
    const context: CommandContext = {
      commandId: 'c-real',
      signal: new AbortController().signal,
      log: silentLogger(),
      progress: (update) => updates.push(update),
      afterDelivery: () => assert.fail('inventory must not schedule actions'),
    };
    const result = await definition.handler({}, context);
    const inventory = result.inventory as Inventory;

    assert.equal(inventory.cpu.count, os.cpus().length);
    assert.equal(inventory.cpu.architecture, os.machine());
    assert.ok(inventory.cpu.socket_count >= 1);
    assert.ok(inventory.cpu.flags.every((flag) => /^\S+$/.test(flag)));
    assert.ok(inventory.cpu.frequency === null || /^\d+(\.\d+)?$/.test(inventory.cpu.frequency));
    assert.ok((inventory.memory.total ?? 0) > 0);
    assert.ok(inventory.memory.physical_mb === null || inventory.memory.physical_mb > 0);
    assert.equal(inventory.hostname, os.hostname());
    for (const disk of inventory.disks) {
      assert.doesNotMatch(disk.name, /^\/dev\/(loop|zram|ram|fd)/);
      assert.ok(disk.size > 0, disk.name);
    }
    for (const nic of inventory.interfaces) {
      assert.notEqual(nic.name, 'lo');
      assert.match(nic.mac_address, /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
      const base = path.join(DEFAULT_PATHS.sys, 'class', 'net', nic.name);
      const physical = await access(path.join(base, 'device')).then(
        () => true,
        () => false,
      );
      const bond = await access(path.join(base, 'bonding')).then(
        () => true,
        () => false,
      );
      assert.ok(physical || bond || /\.\d+$/.test(nic.name), nic.name);
    }
    for (const device of inventory.pci_devices) {
      assert.match(device.address, /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/);
      assert.match(device.vendor ?? '', /^[0-9a-f]{4}$/);
    }
    assert.equal(typeof inventory.bmc_address, 'string');
    assert.equal(typeof inventory.bmc_v6address, 'string');
    let efi = true;
    await access(path.join(DEFAULT_PATHS.sys, 'firmware', 'efi')).catch(() => {
      efi = false;
    });
    assert.equal(inventory.boot.current_boot_mode, efi ? 'uefi' : 'bios');
    assert.deepEqual(inventory.bluefield, []);
    assert.equal(updates.length, INVENTORY_PARTS.length);
  });
});
