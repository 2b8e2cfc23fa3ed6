/**
 * Generates a prepared machine for inventory tests: sysfs, procfs, /dev, udev's database and fake
 * tools on a private PATH, reproducing a two-socket server with NVMe and SATA disks, a 25 GbE
 * Mellanox/BlueField port with carrier, an Intel port without, a VLAN, a bond, a veth (to be left
 * out), the loopback, a BMC, SMBIOS memory devices and EFI. Everything is explicit here so the test
 * can state the whole inventory it expects.
 */
import { chmod, mkdir, symlink, writeFile } from 'node:fs/promises';
import type os from 'node:os';
import path from 'node:path';
import type { NetworkInterfacesSource } from '../../agent/hardware/generic/inventory/index.js';
import type { HardwarePaths } from '../../agent/hardware/paths.js';

export interface ServerTree {
  paths: Required<HardwarePaths>;
  /** A PATH holding only the fake lsblk, ipmitool and biosdevname. */
  toolPath: string;
  /** The address table the host would report (getifaddrs is not a file). */
  addresses: NetworkInterfacesSource;
}

export const put = async (file: string, content: string | Buffer): Promise<void> => {
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, content);
};

const link = async (target: string, file: string): Promise<void> => {
  await mkdir(path.dirname(file), { recursive: true });
  await symlink(target, file);
};

/** Writes a POSIX shell script. Only shell built-ins are used: the tests' PATH has no coreutils. */
export const writeTool = async (directory: string, name: string, body: string): Promise<void> => {
  const file = path.join(directory, name);
  await put(file, `#!/bin/sh\n${body}\n`);
  await chmod(file, 0o755);
};

/** A shell word printing `text` verbatim with printf. */
const quote = (text: string): string => `'${text.replaceAll("'", `'\\''`)}'`;

/* ---------------------------------------------------------------- PCI and NICs */

interface PciFunction {
  address: string;
  vendor: string;
  device: string;
  class: string;
  revision: string;
  driver: string | null;
}

export const PCI_FUNCTIONS: PciFunction[] = [
  {
    address: '0000:00:00.0',
    vendor: '0x8086',
    device: '0x2020',
    class: '0x060000',
    revision: '0x07',
    driver: null,
  },
  {
    address: '0000:00:17.0',
    vendor: '0x8086',
    device: '0xa182',
    class: '0x010601',
    revision: '0x09',
    driver: 'ahci',
  },
  // A BlueField-2 DPU as the host sees it: two ConnectX-6 Dx ports and the SoC management function.
  {
    address: '0000:17:00.0',
    vendor: '0x15b3',
    device: '0xa2d6',
    class: '0x020000',
    revision: '0x01',
    driver: 'mlx5_core',
  },
  {
    address: '0000:17:00.1',
    vendor: '0x15b3',
    device: '0xa2d6',
    class: '0x020000',
    revision: '0x01',
    driver: null,
  },
  {
    address: '0000:17:00.2',
    vendor: '0x15b3',
    device: '0xc2d5',
    class: '0x058000',
    revision: '0x01',
    driver: null,
  },
  {
    address: '0000:19:00.0',
    vendor: '0x8086',
    device: '0x1521',
    class: '0x020000',
    revision: '0x01',
    driver: 'igb',
  },
  {
    address: '0000:5e:00.0',
    vendor: '0x144d',
    device: '0xa80a',
    class: '0x010802',
    revision: '0x00',
    driver: 'nvme',
  },
  {
    address: '0000:5f:00.0',
    vendor: '0x144d',
    device: '0xa80a',
    class: '0x010802',
    revision: '0x00',
    driver: 'nvme',
  },
];

const buildPci = async (sys: string): Promise<void> => {
  for (const fn of PCI_FUNCTIONS) {
    const directory = path.join(sys, 'devices', 'pci0000:00', fn.address);
    for (const attribute of ['vendor', 'device', 'class', 'revision'] as const) {
      await put(path.join(directory, attribute), `${fn[attribute]}\n`);
    }
    if (fn.driver) await link(`../../../bus/pci/drivers/${fn.driver}`, path.join(directory, 'driver'));
    await link(
      `../../../devices/pci0000:00/${fn.address}`,
      path.join(sys, 'bus', 'pci', 'devices', fn.address),
    );
  }
};

const buildNetwork = async (sys: string): Promise<void> => {
  const net = (name: string, attributes: Record<string, string>) =>
    Promise.all(
      Object.entries(attributes).map(([file, value]) =>
        put(path.join(sys, 'class', 'net', name, file), `${value}\n`),
      ),
    );
  const device = (name: string, pci: string) =>
    link(`../../../devices/pci0000:00/${pci}`, path.join(sys, 'class', 'net', name, 'device'));

  await net('ens1f0np0', { address: '0c:42:a1:5e:7f:10', carrier: '1', speed: '25000', operstate: 'up' });
  await device('ens1f0np0', '0000:17:00.0');
  // Cable unplugged: carrier 0 and speed -1 ("unknown"), as igb reports them.
  await net('eno1', { address: '3C:EC:EF:AA:BB:01', carrier: '0', speed: '-1', operstate: 'down' });
  await device('eno1', '0000:19:00.0');
  await net('ens1f0np0.100', { address: '0c:42:a1:5e:7f:10', carrier: '1', speed: '25000', operstate: 'up' });
  // A bond without slaves: no carrier, and reading its speed fails (no file here).
  await net('bond0', { address: 'ae:5c:27:41:9b:03', carrier: '0', operstate: 'down' });
  await net('bond0/bonding', { mode: '802.3ad 4', slaves: '' });
  await net('veth9f3a2c1', { address: '5a:1e:44:0b:c2:7d', carrier: '1', speed: '10000' });
  await net('lo', { address: '00:00:00:00:00:00', carrier: '1' });
};

const v4 = (address: string, mac: string): os.NetworkInterfaceInfo => ({
  family: 'IPv4',
  address,
  netmask: '255.255.255.0',
  mac,
  internal: false,
  cidr: `${address}/24`,
});
const v6 = (address: string, mac: string, scopeid: number): os.NetworkInterfaceInfo => ({
  family: 'IPv6',
  address,
  netmask: 'ffff:ffff:ffff:ffff::',
  mac,
  internal: false,
  cidr: `${address}/64`,
  scopeid,
});

export const SERVER_ADDRESSES: NetworkInterfacesSource = () => ({
  lo: [
    {
      family: 'IPv4',
      address: '127.0.0.1',
      netmask: '255.0.0.0',
      mac: '00:00:00:00:00:00',
      internal: true,
      cidr: '127.0.0.1/8',
    },
  ],
  ens1f0np0: [v6('fe80::e42:a1ff:fe5e:7f10', '0c:42:a1:5e:7f:10', 4)],
  'ens1f0np0.100': [
    v4('192.0.2.17', '0c:42:a1:5e:7f:10'),
    v6('fe80::e42:a1ff:fe5e:7f10', '0c:42:a1:5e:7f:10', 7),
    v6('2001:db8:100::17', '0c:42:a1:5e:7f:10', 0),
  ],
  veth9f3a2c1: [v4('172.17.0.1', '5a:1e:44:0b:c2:7d')],
});

/* ---------------------------------------------------------------- disks */

interface LsblkEntry {
  kname: string;
  type: string;
  size: number;
  majMin: string | null;
  rota?: boolean;
  rm?: boolean;
  ro?: boolean;
  model?: string | null;
  serial?: string | null;
  vendor?: string | null;
  wwn?: string | null;
  hctl?: string | null;
  tran?: string | null;
  rev?: string | null;
  logSec?: number;
  phySec?: number;
  fstype?: string | null;
  pkname?: string | null;
  children?: LsblkEntry[];
}

/** Every column `lsblk -J -b -O` prints (util-linux 2.38), in its order. */
const lsblkDevice = (entry: LsblkEntry): Record<string, unknown> => ({
  alignment: 0,
  'disc-aln': 0,
  dax: false,
  'disc-gran': entry.type === 'rom' ? 0 : 512,
  'disc-max': entry.type === 'rom' ? 0 : 2199023255040,
  'disc-zero': false,
  fsavail: null,
  fsroots: [null],
  fssize: null,
  fstype: entry.fstype ?? null,
  fsused: null,
  'fsuse%': null,
  fsver: null,
  group: entry.type === 'rom' ? 'cdrom' : 'disk',
  hctl: entry.hctl ?? null,
  hotplug: entry.rm ?? false,
  kname: entry.kname,
  label: null,
  'log-sec': entry.logSec ?? 512,
  'maj:min': entry.majMin,
  'min-io': entry.phySec ?? 512,
  mode: 'brw-rw----',
  model: entry.model ?? null,
  name: entry.kname,
  'opt-io': 0,
  owner: 'root',
  partflags: null,
  partlabel: null,
  parttype: null,
  parttypename: null,
  partuuid: null,
  path: `/dev/${entry.kname}`,
  'phy-sec': entry.phySec ?? 512,
  pkname: entry.pkname ?? null,
  pttype: entry.children ? 'gpt' : null,
  ptuuid: null,
  ra: 128,
  rand: entry.rota ?? false,
  rev: entry.rev ?? null,
  rm: entry.rm ?? false,
  ro: entry.ro ?? false,
  rota: entry.rota ?? false,
  'rq-size': 1023,
  sched: entry.type === 'part' ? null : 'mq-deadline',
  serial: entry.serial ?? null,
  size: entry.size,
  start: null,
  state: entry.type === 'disk' ? 'running' : null,
  subsystems: entry.tran === 'nvme' ? 'block:nvme:pci' : 'block:scsi:pci',
  mountpoint: null,
  mountpoints: [null],
  tran: entry.tran ?? null,
  type: entry.type,
  uuid: null,
  vendor: entry.vendor ?? null,
  wsame: 0,
  wwn: entry.wwn ?? null,
  zoned: 'none',
  'zone-sz': 0,
  'zone-wgran': 0,
  'zone-app': 0,
  'zone-nr': 0,
  'zone-omax': 0,
  'zone-amax': 0,
  ...(entry.children ? { children: entry.children.map(lsblkDevice) } : {}),
});

const NVME_MODEL = 'SAMSUNG MZQL21T9HCJR-00A07';

export const LSBLK_ENTRIES: LsblkEntry[] = [
  { kname: 'loop0', type: 'loop', size: 67108864, majMin: '7:0', ro: true, fstype: 'squashfs' },
  {
    kname: 'sda',
    type: 'disk',
    size: 480103981056,
    majMin: '8:0',
    model: 'SAMSUNG MZ7L3480HCHQ-00A07',
    serial: 'S664NE0R812345',
    vendor: 'ATA     ',
    wwn: '0x5002538f42b6c1d0',
    hctl: '0:0:0:0',
    tran: 'sata',
    rev: 'JXTC',
    phySec: 4096,
  },
  {
    kname: 'sdb',
    type: 'disk',
    size: 4000787030016,
    majMin: '8:16',
    rota: true,
    model: 'ST4000NM0035-1V4107',
    serial: 'ZC1ABCDE',
    vendor: 'ATA     ',
    wwn: '0x5000c500b1234567',
    hctl: '1:0:0:0',
    tran: 'sata',
    rev: 'TNC3',
    phySec: 4096,
  },
  {
    kname: 'sr0',
    type: 'rom',
    size: 1073741312,
    majMin: '11:0',
    rm: true,
    model: 'Virtual CDROM0',
    vendor: 'AMI     ',
    hctl: '6:0:0:0',
    tran: 'usb',
    rota: true,
    logSec: 2048,
    phySec: 2048,
  },
  {
    kname: 'nvme0n1',
    type: 'disk',
    size: 1920383410176,
    majMin: '259:0',
    model: NVME_MODEL,
    serial: 'S64GNE0R701234',
    wwn: 'eui.36344730527012340025384500000001',
    tran: 'nvme',
    rev: 'GDC5302Q',
    children: [
      {
        kname: 'nvme0n1p1',
        type: 'part',
        size: 536870912,
        majMin: '259:1',
        pkname: 'nvme0n1',
        fstype: 'vfat',
        tran: 'nvme',
      },
      {
        kname: 'nvme0n1p2',
        type: 'part',
        size: 1919845482496,
        majMin: '259:2',
        pkname: 'nvme0n1',
        fstype: 'ext4',
        tran: 'nvme',
      },
    ],
  },
  {
    kname: 'nvme1n1',
    type: 'disk',
    size: 1920383410176,
    majMin: '259:3',
    model: NVME_MODEL,
    serial: 'S64GNE0R705678',
    wwn: 'eui.36344730527056780025384500000001',
    tran: 'nvme',
    rev: 'GDC5302Q',
  },
];

export const lsblkJson = (entries: LsblkEntry[] = LSBLK_ENTRIES): string =>
  JSON.stringify({ blockdevices: entries.map(lsblkDevice) }, null, 3);

/** udev records: the NVMe disk nvme1n1 has none, so its identity comes from lsblk. */
const UDEV_RECORDS: Record<string, string[]> = {
  'b8:0': [
    'S:disk/by-path/pci-0000:00:17.0-ata-1',
    'S:disk/by-path/pci-0000:00:17.0-ata-1.0',
    'S:disk/by-id/ata-SAMSUNG_MZ7L3480HCHQ-00A07_S664NE0R812345',
    'S:disk/by-id/wwn-0x5002538f42b6c1d0',
    'I:2914031',
    'E:ID_ATA=1',
    'E:ID_TYPE=disk',
    'E:ID_BUS=ata',
    'E:ID_MODEL=SAMSUNG_MZ7L3480HCHQ-00A07',
    'E:ID_REVISION=JXTC',
    'E:ID_SERIAL=SAMSUNG_MZ7L3480HCHQ-00A07_S664NE0R812345',
    'E:ID_SERIAL_SHORT=S664NE0R812345',
    'E:ID_WWN=0x5002538f42b6c1d0',
    'E:ID_WWN_WITH_EXTENSION=0x5002538f42b6c1d0',
    'E:ID_PATH=pci-0000:00:17.0-ata-1.0',
    'E:ID_PATH_TAG=pci-0000_00_17_0-ata-1_0',
    'G:systemd',
  ],
  'b8:16': [
    'S:disk/by-path/pci-0000:00:17.0-ata-2',
    'S:disk/by-path/pci-0000:00:17.0-ata-2.0',
    'I:2914207',
    'E:ID_ATA=1',
    'E:ID_TYPE=disk',
    'E:ID_BUS=ata',
    'E:ID_MODEL=ST4000NM0035-1V4107',
    'E:ID_SERIAL=ST4000NM0035-1V4107_ZC1ABCDE',
    'E:ID_SERIAL_SHORT=ZC1ABCDE',
    'E:ID_WWN=0x5000c500b1234567',
    'E:ID_WWN_WITH_EXTENSION=0x5000c500b1234567',
    'G:systemd',
  ],
  'b259:0': [
    'S:disk/by-path/pci-0000:5e:00.0-nvme-1',
    'I:2913877',
    'E:ID_SERIAL=SAMSUNG_MZQL21T9HCJR-00A07_S64GNE0R701234_1',
    'E:ID_SERIAL_SHORT=S64GNE0R701234',
    'E:ID_WWN=eui.36344730527012340025384500000001',
    'E:ID_MODEL=SAMSUNG MZQL21T9HCJR-00A07',
    'E:ID_PATH=pci-0000:5e:00.0-nvme-1',
    'G:systemd',
  ],
};

const buildDisks = async (paths: Required<HardwarePaths>): Promise<void> => {
  const { sys, dev, run } = paths;
  const scsi: Record<string, string> = { sda: '0:0:0:0', sdb: '1:0:0:0', sr0: '6:0:0:0' };
  for (const kname of ['sda', 'sdb', 'sr0', 'nvme0n1', 'nvme1n1', 'loop0']) {
    const device = path.join(sys, 'block', kname, 'device');
    await mkdir(device, { recursive: true });
    const hctl = scsi[kname];
    if (hctl) {
      await mkdir(path.join(device, 'scsi_device', hctl), { recursive: true });
      await put(path.join(device, 'vendor'), kname === 'sr0' ? 'AMI     \n' : 'ATA     \n');
    }
    await link(`../../block/${kname}`, path.join(sys, 'class', 'block', kname));
  }
  // udev's by-path links; the partition links must not be taken for the disks.
  const byPath: Record<string, string> = {
    'pci-0000:00:17.0-ata-1': 'sda',
    'pci-0000:00:17.0-ata-1.0': 'sda',
    'pci-0000:00:17.0-ata-2': 'sdb',
    'pci-0000:00:17.0-ata-2.0': 'sdb',
    'pci-0000:5e:00.0-nvme-1': 'nvme0n1',
    'pci-0000:5e:00.0-nvme-1-part1': 'nvme0n1p1',
    'pci-0000:5e:00.0-nvme-1-part2': 'nvme0n1p2',
    'pci-0000:5f:00.0-nvme-1': 'nvme1n1',
  };
  for (const [name, target] of Object.entries(byPath)) {
    await link(`../../${target}`, path.join(dev, 'disk', 'by-path', name));
  }
  for (const [record, lines] of Object.entries(UDEV_RECORDS)) {
    await put(path.join(run, 'udev', 'data', record), `${lines.join('\n')}\n`);
  }
};

/* ---------------------------------------------------------------- CPU, memory, firmware */

export const CPU_FLAGS =
  'fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts acpi mmx fxsr sse sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc art arch_perfmon pebs bts rep_good nopl xtopology nonstop_tsc cpuid aperfmperf pni pclmulqdq dtes64 monitor ds_cpl vmx smx est tm2 ssse3 sdbg fma cx16 xtpr pdcm pcid dca sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand lahf_lm abm 3dnowprefetch cpuid_fault epb cat_l3 cdp_l3 invpcid_single intel_ppin ssbd mba ibrs ibpb stibp ibrs_enhanced tpr_shadow vnmi flexpriority ept vpid ept_ad fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms invpcid cqm mpx rdt_a avx512f avx512dq rdseed adx smap clflushopt clwb intel_pt avx512cd avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves cqm_llc cqm_occup_llc cqm_mbm_total cqm_mbm_local dtherm ida arat pln pts pku ospke avx512_vnni md_clear flush_l1d arch_capabilities';

export const CPU_MODEL = 'Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz';

/** Two sockets of 4 cores with 2 threads each: processors 0-7 are first threads, 8-15 their siblings. */
const cpuinfo = (): string => {
  const blocks: string[] = [];
  for (let processor = 0; processor < 16; processor += 1) {
    const socket = Math.floor((processor % 8) / 4);
    const core = processor % 4;
    const apic = socket * 64 + core * 2 + (processor >= 8 ? 1 : 0);
    blocks.push(
      [
        `processor\t: ${processor}`,
        'vendor_id\t: GenuineIntel',
        'cpu family\t: 6',
        'model\t\t: 85',
        `model name\t: ${CPU_MODEL}`,
        'stepping\t: 7',
        'microcode\t: 0x5003604',
        `cpu MHz\t\t: ${processor === 0 ? '2100.000' : (1000 + processor * 37.5).toFixed(3)}`,
        'cache size\t: 28160 KB',
        `physical id\t: ${socket}`,
        'siblings\t: 8',
        `core id\t\t: ${core}`,
        'cpu cores\t: 4',
        `apicid\t\t: ${apic}`,
        `initial apicid\t: ${apic}`,
        'fpu\t\t: yes',
        'fpu_exception\t: yes',
        'cpuid level\t: 22',
        'wp\t\t: yes',
        `flags\t\t: ${CPU_FLAGS}`,
        'vmx flags\t: vnmi preemption_timer posted_intr invvpid ept_x_only ept_ad ept_1gb flexpriority apicv tsc_offset vtpr mtf vapic ept vpid unrestricted_guest vapic_reg vid ple shadow_vmcs pml ept_mode_based_exec tsc_scaling',
        'bugs\t\t: spectre_v1 spectre_v2 spec_store_bypass swapgs taa itlb_multihit mmio_stale_data retbleed eibrs_pbrsb gds',
        'bogomips\t: 4200.00',
        'clflush size\t: 64',
        'cache_alignment\t: 64',
        'address sizes\t: 46 bits physical, 48 bits virtual',
        'power management:',
      ].join('\n'),
    );
  }
  return `${blocks.join('\n\n')}\n\n`;
};

const MEMINFO = `MemTotal:       329614748 kB
MemFree:        325981420 kB
MemAvailable:   326207312 kB
Buffers:            4124 kB
Cached:          1261388 kB
SwapCached:            0 kB
Active:           412860 kB
Inactive:        1104280 kB
SwapTotal:             0 kB
SwapFree:              0 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
`;

/** One SMBIOS structure: formatted area (header included) followed by its strings. */
const smbiosStructure = (type: number, handle: number, body: Buffer, strings: string[]): Buffer => {
  const header = Buffer.alloc(4);
  header.writeUInt8(type, 0);
  header.writeUInt8(4 + body.length, 1);
  header.writeUInt16LE(handle, 2);
  const text =
    strings.length === 0 ? Buffer.from([0, 0]) : Buffer.from(`${strings.join('\0')}\0\0`, 'latin1');
  return Buffer.concat([header, body, text]);
};

/** A type 17 (Memory Device) structure of SMBIOS 3.2 (length 0x28) for a DDR4 RDIMM slot. */
const memoryDevice = (handle: number, locator: string, sizeMb: number): Buffer => {
  const body = Buffer.alloc(0x28 - 4);
  const at = (offset: number) => offset - 4;
  body.writeUInt16LE(0x1000, at(0x04)); // physical memory array handle
  body.writeUInt16LE(0xfffe, at(0x06)); // no error information
  body.writeUInt16LE(72, at(0x08)); // total width
  body.writeUInt16LE(64, at(0x0a)); // data width
  // Sizes of 32 GiB and more do not fit the word: 0x7fff sends the reader to Extended Size.
  body.writeUInt16LE(sizeMb >= 0x7fff ? 0x7fff : sizeMb, at(0x0c));
  body.writeUInt8(0x09, at(0x0e)); // DIMM
  body.writeUInt8(1, at(0x10)); // device locator: string 1
  body.writeUInt8(2, at(0x11)); // bank locator: string 2
  body.writeUInt8(0x1a, at(0x12)); // DDR4
  body.writeUInt16LE(sizeMb ? 0x2080 : 0x0004, at(0x13)); // registered, synchronous
  body.writeUInt16LE(sizeMb ? 2933 : 0, at(0x15));
  body.writeUInt8(sizeMb ? 3 : 0, at(0x17)); // manufacturer
  body.writeUInt8(sizeMb ? 4 : 0, at(0x18)); // serial
  body.writeUInt8(sizeMb ? 5 : 0, at(0x1a)); // part number
  body.writeUInt32LE(sizeMb >= 0x7fff ? sizeMb : 0, at(0x1c));
  body.writeUInt16LE(sizeMb ? 2933 : 0, at(0x20));
  body.writeUInt16LE(1200, at(0x22));
  body.writeUInt16LE(1200, at(0x24));
  body.writeUInt16LE(1200, at(0x26));
  const strings = sizeMb
    ? [
        locator,
        `P${locator[3] === '1' ? 0 : 1}_NODE0`,
        'Samsung',
        `${(0x3a5f0000 + handle).toString(16)}`,
        'M393A4K40DB3-CWE',
      ]
    : [locator, `P${locator[3] === '1' ? 0 : 1}_NODE0`];
  return smbiosStructure(17, handle, body, strings);
};

/** Slots A1-D1 of 32 GiB and E1-F1 of 16 GiB on each CPU, G1-H1 empty: 327 680 MiB in all. */
export const dmiTable = (): Buffer => {
  const structures: Buffer[] = [];
  // BIOS information (type 0) and system information (type 1), which the reader must step over.
  const bios = Buffer.alloc(0x18 - 4);
  bios.writeUInt8(1, 0); // vendor: string 1
  bios.writeUInt8(2, 1); // version: string 2
  bios.writeUInt8(3, 4); // release date: string 3
  structures.push(smbiosStructure(0, 0x0000, bios, ['American Megatrends Inc.', '3.4', '11/08/2022']));
  const system = Buffer.alloc(0x1b - 4);
  system.writeUInt8(1, 0);
  system.writeUInt8(2, 1);
  system.writeUInt8(3, 3);
  structures.push(smbiosStructure(1, 0x0001, system, ['Supermicro', 'SYS-1029U-TN10RT', 'S412345X1234567']));
  let handle = 0x1100;
  for (const cpu of [1, 2]) {
    for (const [slot, sizeMb] of [
      ['A1', 32768],
      ['B1', 32768],
      ['C1', 32768],
      ['D1', 32768],
      ['E1', 16384],
      ['F1', 16384],
      ['G1', 0],
      ['H1', 0],
    ] as const) {
      structures.push(memoryDevice(handle, `CPU${cpu}_DIMM${slot}`, sizeMb));
      handle += 1;
    }
  }
  structures.push(smbiosStructure(127, 0xfeff, Buffer.alloc(0), []));
  return Buffer.concat(structures);
};

const DMI_ID: Record<string, string> = {
  sys_vendor: 'Supermicro',
  product_name: 'SYS-1029U-TN10RT',
  product_serial: 'S412345X1234567',
  product_version: '0123456789',
  board_vendor: 'Supermicro',
  board_name: 'X11DPU',
  bios_vendor: 'American Megatrends Inc.',
  bios_version: '3.4',
  bios_date: '11/08/2022',
  chassis_type: '23',
};

const buildPlatform = async (paths: Required<HardwarePaths>): Promise<void> => {
  const { sys, proc } = paths;
  for (const [file, value] of Object.entries(DMI_ID))
    await put(path.join(sys, 'class', 'dmi', 'id', file), `${value}\n`);
  await put(path.join(sys, 'firmware', 'dmi', 'tables', 'DMI'), dmiTable());
  await mkdir(path.join(sys, 'firmware', 'efi', 'efivars'), { recursive: true });
  // Turbo tops out at 3.9 GHz; one core reports a lower maximum, the reported figure is the highest.
  for (let cpu = 0; cpu < 16; cpu += 1) {
    const cpufreq = path.join(sys, 'devices', 'system', 'cpu', `cpu${cpu}`, 'cpufreq');
    await put(path.join(cpufreq, 'cpuinfo_max_freq'), cpu === 5 ? '3700000\n' : '3900000\n');
    await put(path.join(cpufreq, 'cpuinfo_min_freq'), '800000\n');
  }
  await put(path.join(sys, 'devices', 'system', 'cpu', 'online'), '0-15\n');
  // Memory blocks are the fallback for physical_mb; with SMBIOS present they are not used.
  await put(path.join(sys, 'devices', 'system', 'memory', 'block_size_bytes'), '80000000\n');
  for (let block = 0; block < 4; block += 1) {
    await put(path.join(sys, 'devices', 'system', 'memory', `memory${block}`, 'online'), '1\n');
  }
  await put(path.join(proc, 'cpuinfo'), cpuinfo());
  await put(path.join(proc, 'meminfo'), MEMINFO);
  await put(path.join(proc, 'sys', 'kernel', 'arch'), 'x86_64\n');
  await put(path.join(proc, 'sys', 'kernel', 'hostname'), 'node-17.example.org\n');
};

/* ---------------------------------------------------------------- BMC and tools */

/** `ipmitool lan print <ch>` as ipmitool 1.8.19 prints it for a LAN channel. */
export const lanPrintOutput = (
  source: string,
  ip: string,
  mask: string,
  mac: string,
  gateway: string,
): string =>
  [
    'Set in Progress         : Set Complete',
    'Auth Type Support       : NONE MD2 MD5 PASSWORD ',
    'Auth Type Enable        : Callback : MD2 MD5 PASSWORD ',
    '                        : User     : MD2 MD5 PASSWORD ',
    '                        : Operator : MD2 MD5 PASSWORD ',
    '                        : Admin    : MD2 MD5 PASSWORD ',
    '                        : OEM      : MD2 MD5 PASSWORD ',
    `IP Address Source       : ${source}`,
    `IP Address              : ${ip}`,
    `Subnet Mask             : ${mask}`,
    `MAC Address             : ${mac}`,
    'SNMP Community String   : public',
    'IP Header               : TTL=0x00 Flags=0x00 Precedence=0x00 TOS=0x00',
    'BMC ARP Control         : ARP Responses Enabled, Gratuitous ARP Disabled',
    'Gratituous ARP Intrvl   : 0.0 seconds',
    `Default Gateway IP      : ${gateway}`,
    'Default Gateway MAC     : 00:00:00:00:00:00',
    'Backup Gateway IP       : 0.0.0.0',
    'Backup Gateway MAC      : 00:00:00:00:00:00',
    '802.1q VLAN ID          : Disabled',
    '802.1q VLAN Priority    : 0',
    'RMCP+ Cipher Suites     : 1,2,3,6,7,8,11,12',
    'Cipher Suite Priv Max   : XaaaXXaaaXXaaXX',
    '                        :     X=Cipher Suite Unused',
    '                        :     c=CALLBACK',
    '                        :     u=USER',
    '                        :     o=OPERATOR',
    '                        :     a=ADMIN',
    '                        :     O=OEM',
    'Bad Password Threshold  : Not Available',
    '',
  ].join('\n');

const LAN6_DYNAMIC = [
  'IPv6 Dynamic Address 0:',
  '    Source/Type:    SLAAC',
  '    Address:        2001:db8:42::42/64',
  '    Status:         active',
  'IPv6 Dynamic Address 1:',
  '    Source/Type:    DHCPv6',
  '    Address:        ::/0',
  '    Status:         disabled',
  '',
].join('\n');

/**
 * The BMC answers on channel 3 (10.0.0.42); channel 1 is a LAN channel left unconfigured (0.0.0.0,
 * which IPA skips) and channel 2 is not a LAN channel. IPv6 is enabled on channel 3 only.
 */
const IPMITOOL = `case "$*" in
  "lan print 1") printf '%s' ${quote(lanPrintOutput('DHCP Address', '0.0.0.0', '0.0.0.0', '3c:ec:ef:12:34:55', '0.0.0.0'))} ;;
  "lan print 3") printf '%s' ${quote(lanPrintOutput('Static Address', '10.0.0.42', '255.255.255.0', '3c:ec:ef:12:34:56', '10.0.0.1'))} ;;
  "lan print "*) printf 'Channel %s is not a LAN channel\\n' "$3" >&2; exit 1 ;;
  "lan6 print 1 enables") printf 'IPv6/IPv4 Addressing Enables: ipv4\\n' ;;
  "lan6 print 3 enables") printf 'IPv6/IPv4 Addressing Enables: both\\n' ;;
  "lan6 print 3 dynamic_addr") printf '%s' ${quote(LAN6_DYNAMIC)} ;;
  *) printf 'Failed to get IPv6/IPv4 Addressing Enables: Invalid data field in request\\n' >&2; exit 1 ;;
esac`;

/** ipmitool when /dev/ipmi0 exists but the driver does not answer, as ipmitool 1.8.19 reports it. */
export const FAILING_IPMITOOL = `printf 'Could not open device at /dev/ipmi0 or /dev/ipmi/0 or /dev/ipmidev/0: No such device or address\\n' >&2
printf 'Channel %s is not a LAN channel\\n' "$3" >&2
exit 1`;

const BIOSDEVNAME_DUMP = `BIOS device: em1
Kernel name: eno1
Permanent MAC: 3C:EC:EF:AA:BB:01
Assigned MAC : 3C:EC:EF:AA:BB:01
Driver: igb
Driver version: 5.10.0-28-amd64
Firmware version: 1.63, 0x80000b4a
Bus Info: 0000:19:00.0
PCI name      : 0000:19:00.0
PCI Slot      : embedded
SMBIOS Device Type: Ethernet
SMBIOS Instance: 1
SMBIOS Enabled: True
sysfs Index: 1
sysfs Label: Intel Ethernet i350 #1
Embedded Index: 1

BIOS device: p1p1
Kernel name: ens1f0np0
Permanent MAC: 0C:42:A1:5E:7F:10
Assigned MAC : 0C:42:A1:5E:7F:10
Driver: mlx5_core
Driver version: 5.10.0-28-amd64
Firmware version: 24.35.2000 (MT_0000000540)
Bus Info: 0000:17:00.0
PCI name      : 0000:17:00.0
PCI Slot      : 1
Index in slot: 1

`;

export const writeLsblk = (directory: string, json: string): Promise<void> =>
  writeTool(
    directory,
    'lsblk',
    `if [ "$*" != "-J -b -O" ]; then printf 'lsblk: unexpected arguments: %s\\n' "$*" >&2; exit 64; fi
printf '%s\\n' ${quote(json)}`,
  );

const buildTools = async (directory: string): Promise<void> => {
  await writeLsblk(directory, lsblkJson());
  await writeTool(directory, 'ipmitool', IPMITOOL);
  await writeTool(
    directory,
    'biosdevname',
    `[ "$*" = "-d" ] || exit 64\nprintf '%s' ${quote(BIOSDEVNAME_DUMP)}`,
  );
};

/** Builds the whole machine under `root` (which must exist and be empty). */
export const buildServerTree = async (root: string): Promise<ServerTree> => {
  const paths = {
    sys: path.join(root, 'sys'),
    dev: path.join(root, 'dev'),
    proc: path.join(root, 'proc'),
    run: path.join(root, 'run'),
  };
  const toolPath = path.join(root, 'bin');
  await Promise.all([
    buildPci(paths.sys),
    buildNetwork(paths.sys),
    buildDisks(paths),
    buildPlatform(paths),
    buildTools(toolPath),
    // The BMC's device node (a plain file is enough: only its presence is checked).
    put(path.join(paths.dev, 'ipmi0'), ''),
  ]);
  return { paths, toolPath, addresses: SERVER_ADDRESSES };
};
