import assert from 'node:assert/strict';
import { access, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { CommandContext, ProgressUpdate } from '../../agent/commands/definition.js';
import { inventoryCommands } from '../../agent/commands/inventory.js';
import {
  collectInventory,
  parseLsblkOutput,
  selectDisks,
  toDiskInventory,
  type NetworkInterfacesSource,
} from '../../agent/hardware/generic/inventory.js';
import { DEFAULT_PATHS, type HardwarePaths } from '../../agent/hardware/paths.js';
import { validate } from '../../agent/protocol/validate.js';
import { AgentError, CancelledError } from '../../agent/util/errors.js';
import { silentLogger } from '../../agent/util/logger.js';
import type { ProcessResult, RunProcess, RunProcessOptions } from '../../agent/util/run-process.js';

// Fixtures stay in the source tree; the compiled test runs from dist/test/unit.
const FIXTURES = fileURLToPath(new URL('../../../test/fixtures/lsblk/', import.meta.url));
const readFixture = (name: string): Promise<string> => readFile(path.join(FIXTURES, name), 'utf8');

let root: string;
let paths: HardwarePaths;
let syntheticLsblk: string;

const put = async (file: string, content: string): Promise<void> => {
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, content);
};

/** A sysfs/dev/proc tree with two PCI NICs, a bridge, the loopback, DMI data and a by-path link. */
const buildTree = async (): Promise<void> => {
  const sys = (...parts: string[]) => path.join(paths.sys, ...parts);
  const nic = async (name: string, pci: string, files: Record<string, string>, ids: [string, string]) => {
    await put(sys('devices', 'pci0000:00', pci, 'vendor'), `${ids[0]}\n`);
    await put(sys('devices', 'pci0000:00', pci, 'device'), `${ids[1]}\n`);
    for (const [file, content] of Object.entries(files))
      await put(sys('class', 'net', name, file), `${content}\n`);
    await symlink(
      path.join('..', '..', '..', 'devices', 'pci0000:00', pci),
      sys('class', 'net', name, 'device'),
    );
  };
  await nic('eth0', '0000:03:00.0', { address: '52:54:00:AA:BB:01', carrier: '1', speed: '10000' }, [
    '0x8086',
    '0x1572',
  ]);
  // A down link: carrier cannot be read and speed is -1, as the kernel reports them.
  await nic('eno2', '0000:04:00.0', { address: '52:54:00:aa:bb:02', speed: '-1' }, ['0x15b3', '0xa2d6']);
  await put(sys('class', 'net', 'br0', 'address'), '52:54:00:aa:bb:03\n');
  await put(sys('class', 'net', 'br0', 'carrier'), '1\n');
  await put(sys('class', 'net', 'lo', 'address'), '00:00:00:00:00:00\n');

  const dmi = {
    product_name: 'PowerEdge R650',
    product_serial: 'ABC1234',
    sys_vendor: 'Dell Inc.',
    bios_vendor: 'Dell Inc.',
    bios_version: '1.9.2',
    bios_date: '01/18/2023',
  };
  for (const [file, content] of Object.entries(dmi))
    await put(sys('class', 'dmi', 'id', file), `${content}\n`);

  await put(sys('devices', 'system', 'memory', 'block_size_bytes'), '8000000\n');
  for (let block = 0; block < 4; block += 1) {
    await put(sys('devices', 'system', 'memory', `memory${block}`, 'online'), '1\n');
  }

  const byPath = path.join(paths.dev, 'disk', 'by-path');
  await mkdir(byPath, { recursive: true });
  await symlink('../../sda', path.join(byPath, 'pci-0000:18:00.0-scsi-0:2:0:0'));
  await symlink('../../sda1', path.join(byPath, 'pci-0000:18:00.0-scsi-0:2:0:0-part1'));

  await put(path.join(paths.proc, 'cpuinfo'), 'processor\t: 0\ncpu MHz\t\t: 2100.000\n');
};

const address = (family: 'IPv4' | 'IPv6', value: string): os.NetworkInterfaceInfo =>
  family === 'IPv4'
    ? {
        family,
        address: value,
        netmask: '255.255.255.0',
        mac: '52:54:00:aa:bb:01',
        internal: false,
        cidr: null,
      }
    : {
        family,
        address: value,
        netmask: 'ffff::',
        mac: '52:54:00:aa:bb:01',
        internal: false,
        cidr: null,
        scopeid: 2,
      };

const fakeAddresses: NetworkInterfacesSource = () => ({
  eth0: [
    address('IPv6', 'fe80::5054:ff:feaa:bb01'),
    address('IPv4', '192.0.2.10'),
    address('IPv4', '192.0.2.11'),
  ],
  br0: [address('IPv4', '198.51.100.1')],
});

interface LsblkCall {
  file: string;
  args: string[];
  options: RunProcessOptions | undefined;
}

const fakeLsblk = (stdout: string, calls: LsblkCall[] = []): RunProcess => {
  return async (file, args, options) => {
    calls.push({ file, args, options });
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

before(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'bma-inventory-'));
  paths = { sys: path.join(root, 'sys'), dev: path.join(root, 'dev'), proc: path.join(root, 'proc') };
  await buildTree();
  syntheticLsblk = await readFixture('synthetic-mixed.json');
});

after(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('lsblk parsing', () => {
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
      disks.map((disk) => [disk.name, disk.size, disk.rotational, disk.model, disk.wwn]),
      [['/dev/sda', 500107862016, true, 'ST500', null]],
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

describe('collectInventory on a prepared tree', () => {
  const collect = (overrides: { paths?: HardwarePaths; progress?: (update: ProgressUpdate) => void } = {}) =>
    collectInventory({
      paths: overrides.paths ?? paths,
      bootif: '01-52-54-00-aa-bb-01',
      runProcess: fakeLsblk(syntheticLsblk),
      networkInterfaces: fakeAddresses,
      ...(overrides.progress ? { progress: overrides.progress } : {}),
    });

  it('lists physical NICs only, with sysfs attributes and the first address of each family', async () => {
    const { interfaces } = await collect();
    assert.deepEqual(
      interfaces.map((nic) => nic.name),
      ['eno2', 'eth0'],
    );
    const [eno2, eth0] = interfaces;
    assert.deepEqual(eth0, {
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
    });
    assert.equal(eno2?.has_carrier, false);
    assert.equal(eno2?.speed_mbps, null);
    assert.equal(eno2?.ipv4_address, null);
    assert.equal(eno2?.vendor, '0x15b3');
  });

  it('reports disks with IPA field names, device paths under the dev root and by-path links', async () => {
    const lsblkCalls: LsblkCall[] = [];
    const { disks } = await collectInventory({
      paths,
      bootif: null,
      runProcess: fakeLsblk(syntheticLsblk, lsblkCalls),
      networkInterfaces: fakeAddresses,
    });
    assert.equal(lsblkCalls.length, 1);
    assert.deepEqual([lsblkCalls[0]?.file, ...(lsblkCalls[0]?.args ?? [])], ['lsblk', '-J', '-b', '-O']);
    assert.deepEqual(disks[0], {
      name: path.join(paths.dev, 'sda'),
      model: 'PERC H730P Mini',
      size: 480103981056,
      rotational: true,
      wwn: '0x6d0946606d8a2e00',
      serial: '0044f2a3b1c2d3e4',
      vendor: 'DELL',
      wwn_with_extension: '0x6d0946606d8a2e002a6f0b3c12345678',
      wwn_vendor_extension: '0x2a6f0b3c12345678',
      hctl: '0:2:0:0',
      by_path: path.join(paths.dev, 'disk', 'by-path', 'pci-0000:18:00.0-scsi-0:2:0:0'),
    });
    const nvme = disks.find((disk) => disk.name.endsWith('nvme0n1'));
    assert.equal(nvme?.wwn, 'eui.36344730524012340025384500000001');
    assert.equal(nvme?.wwn_vendor_extension, null);
    assert.equal(nvme?.by_path, null);
  });

  it('reads system vendor and firmware from DMI, memory blocks and the boot facts', async () => {
    const inventory = await collect();
    assert.deepEqual(inventory.system_vendor, {
      product_name: 'PowerEdge R650',
      serial_number: 'ABC1234',
      manufacturer: 'Dell Inc.',
      firmware: { vendor: 'Dell Inc.', version: '1.9.2', build_date: '01/18/2023' },
    });
    assert.equal(inventory.memory.physical_mb, 512);
    assert.deepEqual(inventory.boot, { current_boot_mode: 'bios', pxe_interface: '01-52-54-00-aa-bb-01' });
    assert.equal(inventory.bmc_address, '0.0.0.0');
    assert.equal(inventory.bmc_v6address, '::/0');
    assert.equal(inventory.bmc_mac, null);
    assert.deepEqual(inventory.pci_devices, []);
    assert.deepEqual(inventory.bluefield, []);
  });

  it('reports uefi when firmware/efi exists', async () => {
    const efi = path.join(paths.sys, 'firmware', 'efi');
    await mkdir(efi, { recursive: true });
    try {
      assert.equal((await collect()).boot.current_boot_mode, 'uefi');
    } finally {
      await rm(efi, { recursive: true });
    }
    assert.equal((await collect()).boot.current_boot_mode, 'bios');
  });

  it('tolerates an empty tree', async () => {
    const empty = { sys: path.join(root, 'empty', 'sys'), dev: path.join(root, 'empty', 'dev'), proc: root };
    const inventory = await collect({ paths: empty });
    assert.deepEqual(inventory.interfaces, []);
    assert.equal(inventory.memory.physical_mb, null);
    assert.equal(inventory.system_vendor.product_name, null);
    assert.equal(inventory.disks[0]?.by_path, null);
  });

  it('reports one progress step per part', async () => {
    const updates: ProgressUpdate[] = [];
    await collect({ progress: (update) => updates.push(update) });
    assert.deepEqual(
      updates.map((update) => [update.done, update.total, update.unit]),
      [1, 2, 3, 4, 5, 6].map((done) => [done, 6, 'steps']),
    );
    assert.deepEqual(updates.map((update) => update.phase).sort(), [
      'boot',
      'cpu',
      'disks',
      'interfaces',
      'memory',
      'system',
    ]);
  });

  it('fails with INVENTORY_FAILED carrying the tool error when lsblk fails', async () => {
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
        assert.ok(AgentError.is(error.cause) && error.cause.code === 'TOOL_NOT_FOUND');
        return true;
      },
    );
  });

  it('stops when cancelled', async () => {
    const signal = AbortSignal.abort(new CancelledError());
    await assert.rejects(
      collectInventory({ paths, bootif: null, signal, runProcess: fakeLsblk(syntheticLsblk) }),
      CancelledError,
    );
  });
});

describe('inventory.collect command', () => {
  const [definition] = inventoryCommands({ paths: DEFAULT_PATHS, bootif: null });

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
    const inventory = result.inventory as Awaited<ReturnType<typeof collectInventory>>;

    assert.equal(inventory.cpu.count, os.cpus().length);
    assert.equal(inventory.cpu.architecture, os.machine());
    assert.ok(inventory.cpu.flags.every((flag) => /^\S+$/.test(flag)));
    assert.ok(inventory.memory.total > 0);
    assert.equal(inventory.hostname, os.hostname());
    for (const disk of inventory.disks) {
      assert.doesNotMatch(disk.name, /^\/dev\/(loop|zram|ram|fd)/);
      assert.ok(disk.size > 0, disk.name);
    }
    for (const nic of inventory.interfaces) {
      assert.notEqual(nic.name, 'lo');
      await access(path.join(DEFAULT_PATHS.sys, 'class', 'net', nic.name, 'device'));
    }
    let efi = true;
    await access(path.join(DEFAULT_PATHS.sys, 'firmware', 'efi')).catch(() => {
      efi = false;
    });
    assert.equal(inventory.boot.current_boot_mode, efi ? 'uefi' : 'bios');
    assert.equal(updates.length, 6);
  });
});
