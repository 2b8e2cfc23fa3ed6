/**
 * The PCI side of simulated BlueField cards as the host kernel shows it in sysfs: one directory
 * per function under `devices/pci<domain>:00/<bdf>` reached through `bus/pci/devices/<bdf>`, with
 * the attribute files the kernel writes (`0x%04x`/`0x%06x` text), the driver link, `net/<ifname>`
 * for bound NIC functions, SR-IOV links and the VPD as the binary file the kernel serves (up to and
 * including the end tag). Function layouts follow what hosts really show (see the lspci samples
 * copied in test/fixtures/bluefield/sim): the rshim function is usually .2, but .3 behind a c2d1
 * auxiliary channel, or .1 when only one PF is exposed; a card in flash recovery has only its
 * livefish function. A plain ConnectX NIC and an Intel device that reuses ID a2d2 are there to be
 * told apart from BlueFields.
 */
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';

export type SimGeneration = 'BF1' | 'BF2' | 'BF3';
/** The function number of the rshim ("SoC Management Interface") function. */
export type RshimFunctionNumber = 1 | 2 | 3;

export const MELLANOX = 0x15b3;

interface GenerationIds {
  nic: number;
  rshim: number;
  livefish: number;
  revision: number;
  subsystem: number;
  oui: string;
  speedMbps: number;
  vpd: Omit<VpdInfo, 'serial'>;
  opn: string;
}

export const GENERATION_IDS: Record<SimGeneration, GenerationIds> = {
  BF1: {
    nic: 0xa2d2,
    rshim: 0xc2d2,
    livefish: 0x0211,
    revision: 0x00,
    subsystem: 0x0003,
    oui: '98:03:9b',
    speedMbps: 25000,
    opn: 'N/A',
    vpd: {
      id: 'BlueField SmartNIC 25GbE dual-port SFP28, PCIe Gen3.0/4.0 x8, BlueField G-Series 16 cores, Crypto disabled, 16GB on-board DDR, FHHL, Tall Bracket',
      partNumber: 'MBF1M332A-ASNAT',
      ec: 'A6',
      pcie: 'PCIeGen4 x8',
      model: 'BF1M332A',
    },
  },
  BF2: {
    nic: 0xa2d6,
    rshim: 0xc2d3,
    livefish: 0x0214,
    revision: 0x01,
    subsystem: 0x0054,
    oui: '0c:42:a1',
    speedMbps: 25000,
    opn: 'N/A',
    vpd: {
      id: 'BlueField-2 DPU 25GbE Dual-Port SFP56, Crypto Enabled, 16GB on-board DDR, 1GbE OOB management, Tall Bracket, FHHL',
      partNumber: 'MBF2H332A-AECOT',
      ec: 'A4',
      pcie: 'PCIeGen4 x8',
      model: 'BF2H332A',
    },
  },
  BF3: {
    nic: 0xa2dc,
    rshim: 0xc2d5,
    livefish: 0x021c,
    revision: 0x01,
    subsystem: 0x0051,
    oui: 'a0:88:c2',
    speedMbps: 200000,
    opn: '9009D3B600CVAA',
    vpd: {
      id: 'NVIDIA BlueField-3 B3220 P-Series FHHL DPU; 200GbE (default mode) / NDR200 IB; Dual-port QSFP112; PCIe Gen5.0 x16 with x16 PCIe extension option; 16 Arm cores; 32GB on-board DDR; integrated BMC; Crypto Enabled',
      partNumber: '900-9D3B6-00CV-AA0',
      ec: 'A1',
      pcie: 'PCIeGen5 x16',
      model: 'B3220',
    },
  },
};

const AUX_CHANNEL = 0xc2d1;
const MLX5_VF = 0x101e;
const CONNECTX6_DX = 0x101d;

const CLASS_ETHERNET = 0x020000;
const CLASS_INFINIBAND = 0x020700;
/** lspci "DMA controller": how the rshim function presents itself. */
const CLASS_DMA = 0x080100;
/** lspci "Memory controller": a ConnectX/BlueField in flash recovery. */
const CLASS_MEMORY_OTHER = 0x058000;

export interface VpdInfo {
  id: string;
  partNumber: string;
  ec: string;
  serial: string;
  pcie: string;
  model: string;
}

export interface NetdevSpec {
  name: string;
  address: string;
  /** Mb/s; -1 without carrier, as mlx5 reports it. */
  speed: number;
  carrier: boolean;
  mtu: number;
  /** ARPHRD: 1 Ethernet, 32 InfiniBand. */
  type: number;
  ifindex: number;
  devPort: number;
}

export interface PciFunctionSpec {
  bdf: string;
  vendor: number;
  device: number;
  class: number;
  revision: number;
  subsystemVendor: number;
  subsystemDevice: number;
  driver: string | null;
  numaNode: number;
  netdev: NetdevSpec | null;
  vpd: Buffer | null;
  /** For a VF: its PF. */
  physfn: string | null;
  /** For a PF: its VFs, in order. */
  virtfns: string[];
}

/* ---------------------------------------------------------------- VPD */

const resource = (tag: number, body: Buffer): Buffer => {
  const head = Buffer.alloc(3);
  head[0] = tag;
  head.writeUInt16LE(body.length, 1);
  return Buffer.concat([head, body]);
};

const field = (keyword: string, value: string | Buffer): Buffer => {
  const data = typeof value === 'string' ? Buffer.from(value, 'latin1') : value;
  if (data.length > 255) throw new RangeError(`VPD field ${keyword} is longer than 255 bytes`);
  return Buffer.concat([Buffer.from(keyword, 'latin1'), Buffer.from([data.length]), data]);
};

/**
 * PCI VPD as Mellanox cards carry it: a large-resource ID string (0x82), a VPD-R block (0x90)
 * with PN, EC, V2, SN, V3, VA, V0 and the RV checksum field, and the small end tag (0x78). The RV
 * checksum byte makes the sum of every byte from the start through itself zero.
 */
export const encodeVpd = (info: VpdInfo): Buffer => {
  const idString = resource(0x82, Buffer.from(info.id, 'latin1'));
  const uuid = Buffer.from(info.serial.padEnd(32, '0').slice(0, 32), 'latin1').toString('hex').slice(0, 32);
  const fields = Buffer.concat([
    field('PN', info.partNumber),
    field('EC', info.ec),
    field('V2', info.partNumber),
    field('SN', info.serial),
    field('V3', uuid),
    field('VA', `MLX:MN=MLNX:CSKU=V2:UUID=V3:PCI=V0:MODL=${info.model}`),
    field('V0', info.pcie),
  ]);
  // RV: the checksum byte plus reserved zeros up to a 4-byte boundary of the whole VPD-R block.
  const beforeRv = idString.length + 3 + fields.length + 3;
  const reserved = (4 - ((beforeRv + 1) % 4)) % 4;
  const rvData = Buffer.alloc(1 + reserved);
  const readOnly = resource(0x90, Buffer.concat([fields, field('RV', rvData)]));
  let sum = 0;
  for (const byte of idString) sum += byte;
  const checksumAt = readOnly.length - rvData.length;
  for (const byte of readOnly.subarray(0, checksumAt)) sum += byte;
  readOnly[checksumAt] = (256 - (sum % 256)) % 256;
  return Buffer.concat([idString, readOnly, Buffer.from([0x78])]);
};

/* ---------------------------------------------------------------- layouts */

export interface BlueFieldLayoutInput {
  generation: SimGeneration;
  /** `dddd:bb:dd`. */
  slot: string;
  /** Used for MAC addresses and serial numbers so cards differ. */
  cardIndex: number;
  rshimFunction: RshimFunctionNumber;
  /** Whether the host sees the rshim function at all. */
  rshim: boolean;
  livefish: boolean;
  linkType: 'eth' | 'ib';
  vfs: number;
  serial?: string;
  partNumber?: string;
  description?: string;
  /** First ifindex to hand out. */
  ifindexBase: number;
}

export interface BlueFieldLayout {
  slot: string;
  generation: SimGeneration;
  /** Host NIC PFs, sorted. */
  nic: string[];
  rshim: string | null;
  aux: string | null;
  vfs: string[];
  livefish: string | null;
  /** Netdevs of the PFs, in PF order. */
  netdevs: string[];
  macs: string[];
  vpd: VpdInfo | null;
  functions: PciFunctionSpec[];
}

const hex2 = (value: number): string => value.toString(16).padStart(2, '0');

const parseSlot = (slot: string): { domain: string; bus: number; device: number } => {
  const match = /^([0-9a-f]{4}):([0-9a-f]{2}):([0-9a-f]{2})$/i.exec(slot);
  if (!match) throw new TypeError(`Expected a PCI slot like 0000:03:00, got ${JSON.stringify(slot)}`);
  return { domain: match[1]!.toLowerCase(), bus: parseInt(match[2]!, 16), device: parseInt(match[3]!, 16) };
};

/** `dddd:bb:dd.f` of the n-th function counted from function 0 of the slot (ARI-style overflow). */
const functionAt = (slot: string, n: number): string => {
  const { domain, bus, device } = parseSlot(slot);
  const dev = device + Math.floor(n / 8);
  return `${domain}:${hex2(bus)}:${hex2(dev)}.${n % 8}`;
};

const netdevName = (slot: string, n: number, linkType: 'eth' | 'ib', vf?: number): string => {
  const { bus, device } = parseSlot(slot);
  const base = `${linkType === 'ib' ? 'ibp' : 'enp'}${bus}s${device}f${n}`;
  if (vf !== undefined) return `${base}v${vf}`;
  return linkType === 'ib' ? base : `${base}np${n}`;
};

const macFor = (oui: string, cardIndex: number, port: number): string =>
  `${oui}:5e:${hex2(cardIndex & 0xff)}:${hex2(port)}`;

/** An IPoIB hardware address: QPN flags, the subnet prefix and the port GUID. */
const ipoibAddress = (mac: string): string => {
  const b = mac.split(':');
  const guid = [b[0], b[1], b[2], 'ff', 'fe', b[3], b[4], b[5]];
  return ['00', '00', '10', '87', 'fe', '80', '00', '00', '00', '00', '00', '00', ...guid].join(':');
};

const defaultSerial = (generation: SimGeneration, cardIndex: number): string =>
  `MT${{ BF1: '1942', BF2: '2233', BF3: '2333' }[generation]}X${String(1234 + cardIndex * 1111).padStart(5, '0')}`;

export const layoutBlueField = (input: BlueFieldLayoutInput): BlueFieldLayout => {
  const ids = GENERATION_IDS[input.generation];
  parseSlot(input.slot);
  const numaNode = input.cardIndex % 2;
  const base = {
    vendor: MELLANOX,
    revision: ids.revision,
    subsystemVendor: MELLANOX,
    subsystemDevice: ids.subsystem,
    numaNode,
    netdev: null,
    vpd: null,
    physfn: null,
    virtfns: [],
  };
  const vpdInfo: VpdInfo = {
    ...ids.vpd,
    ...(input.partNumber ? { partNumber: input.partNumber } : {}),
    ...(input.description ? { id: input.description } : {}),
    serial: input.serial ?? defaultSerial(input.generation, input.cardIndex),
  };
  if (input.livefish) {
    const bdf = functionAt(input.slot, 0);
    return {
      slot: input.slot,
      generation: input.generation,
      nic: [],
      rshim: null,
      aux: null,
      vfs: [],
      livefish: bdf,
      netdevs: [],
      macs: [],
      vpd: null,
      functions: [{ ...base, bdf, device: ids.livefish, class: CLASS_MEMORY_OTHER, driver: null }],
    };
  }

  const pfCount = input.rshimFunction === 1 ? 1 : 2;
  const functions: PciFunctionSpec[] = [];
  const vpd = encodeVpd(vpdInfo);
  const nic: string[] = [];
  const netdevs: string[] = [];
  const macs: string[] = [];
  let ifindex = input.ifindexBase;
  for (let pf = 0; pf < pfCount; pf += 1) {
    const bdf = functionAt(input.slot, pf);
    const mac = macFor(ids.oui, input.cardIndex, pf * 2);
    const name = netdevName(input.slot, pf, input.linkType);
    const carrier = pf === 0;
    nic.push(bdf);
    netdevs.push(name);
    macs.push(mac);
    functions.push({
      ...base,
      bdf,
      device: ids.nic,
      class: input.linkType === 'ib' ? CLASS_INFINIBAND : CLASS_ETHERNET,
      driver: 'mlx5_core',
      vpd,
      virtfns: [],
      netdev: {
        name,
        address: input.linkType === 'ib' ? ipoibAddress(mac) : mac,
        speed: carrier ? ids.speedMbps : -1,
        carrier,
        mtu: input.linkType === 'ib' ? 4092 : 1500,
        type: input.linkType === 'ib' ? 32 : 1,
        ifindex: ifindex++,
        devPort: 0,
      },
    });
  }

  let next = pfCount;
  let aux: string | null = null;
  if (input.rshimFunction === 3) {
    aux = functionAt(input.slot, next++);
    functions.push({ ...base, bdf: aux, device: AUX_CHANNEL, class: CLASS_ETHERNET, driver: null });
  }
  let rshim: string | null = null;
  if (input.rshim) {
    rshim = functionAt(input.slot, next);
    // The rshim daemon binds the function to vfio-pci when an IOMMU is there.
    functions.push({ ...base, bdf: rshim, device: ids.rshim, class: CLASS_DMA, driver: 'vfio-pci' });
  }
  // The function number stays reserved even when the host cannot see the rshim function.
  next += 1;

  const vfs: string[] = [];
  const pf0 = functions[0]!;
  for (let vf = 0; vf < input.vfs; vf += 1) {
    const bdf = functionAt(input.slot, next++);
    vfs.push(bdf);
    pf0.virtfns.push(bdf);
    const mac = `${ids.oui}:6e:${hex2(input.cardIndex & 0xff)}:${hex2(vf)}`;
    functions.push({
      ...base,
      bdf,
      device: MLX5_VF,
      class: CLASS_ETHERNET,
      driver: 'mlx5_core',
      physfn: nic[0]!,
      netdev: {
        name: netdevName(input.slot, 0, input.linkType, vf),
        address: input.linkType === 'ib' ? ipoibAddress(mac) : mac,
        speed: -1,
        carrier: false,
        mtu: 1500,
        type: input.linkType === 'ib' ? 32 : 1,
        ifindex: ifindex++,
        devPort: 0,
      },
    });
  }

  return {
    slot: input.slot,
    generation: input.generation,
    nic,
    rshim,
    aux,
    vfs,
    livefish: null,
    netdevs,
    macs,
    vpd: vpdInfo,
    functions,
  };
};

/** A dual-port ConnectX-6 Dx: Mellanox, mlx5_core, VPD, but no BlueField anywhere. */
export const layoutConnectX = (slot: string, index: number, ifindexBase: number): BlueFieldLayout => {
  const vpdInfo: VpdInfo = {
    id: 'ConnectX-6 Dx EN adapter card, 100GbE, Dual-port QSFP56, PCIe 4.0 x16, No Crypto',
    partNumber: 'MCX623106AN-CDAT',
    ec: 'A7',
    serial: `MT2145X${String(4321 + index).padStart(5, '0')}`,
    pcie: 'PCIeGen4 x16',
    model: 'CX623106A',
  };
  const vpd = encodeVpd(vpdInfo);
  const functions: PciFunctionSpec[] = [0, 1].map((pf) => ({
    bdf: functionAt(slot, pf),
    vendor: MELLANOX,
    device: CONNECTX6_DX,
    class: CLASS_ETHERNET,
    revision: 0x00,
    subsystemVendor: MELLANOX,
    subsystemDevice: 0x0016,
    driver: 'mlx5_core',
    numaNode: 0,
    vpd,
    physfn: null,
    virtfns: [],
    netdev: {
      name: netdevName(slot, pf, 'eth'),
      address: macFor('04:3f:72', 0xc0 + index, pf * 2),
      speed: 100000,
      carrier: true,
      mtu: 1500,
      type: 1,
      ifindex: ifindexBase + pf,
      devPort: 0,
    },
  }));
  return {
    slot,
    generation: 'BF2',
    nic: functions.map((fn) => fn.bdf),
    rshim: null,
    aux: null,
    vfs: [],
    livefish: null,
    netdevs: functions.map((fn) => fn.netdev!.name),
    macs: functions.map((fn) => fn.netdev!.address),
    vpd: vpdInfo,
    functions,
  };
};

/** Host platform functions: a root port and an Intel LPC controller whose device ID is a2d2 too. */
export const hostFunctions = (): PciFunctionSpec[] => {
  const intel = (bdf: string, device: number, cls: number, driver: string | null): PciFunctionSpec => ({
    bdf,
    vendor: 0x8086,
    device,
    class: cls,
    revision: 0x04,
    subsystemVendor: 0x15d9,
    subsystemDevice: 0x0981,
    driver,
    numaNode: 0,
    netdev: null,
    vpd: null,
    physfn: null,
    virtfns: [],
  });
  return [intel('0000:00:00.0', 0x2020, 0x060000, null), intel('0000:00:1f.0', 0xa2d2, 0x060100, null)];
};

/* ---------------------------------------------------------------- writing */

const put = async (file: string, content: string | Buffer): Promise<void> => {
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, content);
};

const link = async (target: string, file: string): Promise<void> => {
  await mkdir(path.dirname(file), { recursive: true });
  await symlink(target, file);
};

const hex = (value: number, digits: number): string => `0x${value.toString(16).padStart(digits, '0')}\n`;

const rootOf = (bdf: string): string => `pci${bdf.slice(0, 4)}:00`;

const writeNetdev = async (sys: string, deviceDir: string, relDevice: string, net: NetdevSpec) => {
  const dir = path.join(deviceDir, 'net', net.name);
  const up = net.carrier;
  const attributes: Record<string, string> = {
    address: net.address,
    addr_len: String(net.type === 32 ? 20 : 6),
    broadcast:
      net.type === 32 ? '00:ff:ff:ff:ff:12:40:1b:ff:ff:00:00:00:00:00:00:ff:ff:ff:ff' : 'ff:ff:ff:ff:ff:ff',
    carrier: up ? '1' : '0',
    speed: String(net.speed),
    duplex: up ? 'full' : 'unknown',
    operstate: up ? 'up' : 'down',
    mtu: String(net.mtu),
    type: String(net.type),
    ifindex: String(net.ifindex),
    iflink: String(net.ifindex),
    dev_port: String(net.devPort),
    flags: '0x1003',
    tx_queue_len: '1000',
  };
  for (const [name, value] of Object.entries(attributes)) await put(path.join(dir, name), `${value}\n`);
  await link(`../../../${path.basename(deviceDir)}`, path.join(dir, 'device'));
  await link(`../../${relDevice}/net/${net.name}`, path.join(sys, 'class', 'net', net.name));
};

/** Writes one function under `<sys>/devices`, its bus and driver links, netdev and class entries. */
export const writePciFunction = async (sys: string, fn: PciFunctionSpec): Promise<void> => {
  const rel = `devices/${rootOf(fn.bdf)}/${fn.bdf}`;
  const dir = path.join(sys, rel);
  await put(path.join(dir, 'vendor'), hex(fn.vendor, 4));
  await put(path.join(dir, 'device'), hex(fn.device, 4));
  await put(path.join(dir, 'class'), hex(fn.class, 6));
  await put(path.join(dir, 'revision'), hex(fn.revision, 2));
  await put(path.join(dir, 'subsystem_vendor'), hex(fn.subsystemVendor, 4));
  await put(path.join(dir, 'subsystem_device'), hex(fn.subsystemDevice, 4));
  await put(path.join(dir, 'numa_node'), `${fn.numaNode}\n`);
  await put(path.join(dir, 'enable'), fn.driver ? '1\n' : '0\n');
  await link(`../../../${rel}`, path.join(sys, 'bus', 'pci', 'devices', fn.bdf));
  if (fn.driver) {
    await link(`../../../bus/pci/drivers/${fn.driver}`, path.join(dir, 'driver'));
    await link(`../../../../${rel}`, path.join(sys, 'bus', 'pci', 'drivers', fn.driver, fn.bdf));
  }
  if (fn.vpd) await put(path.join(dir, 'vpd'), fn.vpd);
  if (fn.physfn) await link(`../${fn.physfn}`, path.join(dir, 'physfn'));
  if (fn.virtfns.length > 0 || (fn.physfn === null && fn.netdev)) {
    await put(path.join(dir, 'sriov_totalvfs'), fn.netdev ? '16\n' : '0\n');
    await put(path.join(dir, 'sriov_numvfs'), `${fn.virtfns.length}\n`);
  }
  for (const [index, vf] of fn.virtfns.entries()) await link(`../${vf}`, path.join(dir, `virtfn${index}`));
  if (fn.netdev) await writeNetdev(sys, dir, rel, fn.netdev);
};

/** The host end of a card's tmfifo: a TAP the rshim daemon creates (virtual, no `device` link). */
export const writeTmfifoNetdev = async (sys: string, index: number, ifindex: number): Promise<string> => {
  const name = `tmfifo_net${index}`;
  const rel = `devices/virtual/net/${name}`;
  const dir = path.join(sys, rel);
  const attributes: Record<string, string> = {
    // rshim_net.c: 00:1a:ca:ff:ff:02 + 2 * index on the host side.
    address: `00:1a:ca:ff:ff:${hex2(2 + 2 * index)}`,
    addr_len: '6',
    broadcast: 'ff:ff:ff:ff:ff:ff',
    carrier: '1',
    operstate: 'unknown',
    mtu: '1500',
    type: '1',
    ifindex: String(ifindex),
    iflink: String(ifindex),
    flags: '0x1003',
    tx_queue_len: '1000',
    tun_flags: '0x1002',
  };
  for (const [file, value] of Object.entries(attributes)) await put(path.join(dir, file), `${value}\n`);
  await link(`../../${rel}`, path.join(sys, 'class', 'net', name));
  return name;
};

export const writeLoopback = async (sys: string): Promise<void> => {
  const rel = 'devices/virtual/net/lo';
  const dir = path.join(sys, rel);
  const attributes: Record<string, string> = {
    address: '00:00:00:00:00:00',
    carrier: '1',
    operstate: 'unknown',
    mtu: '65536',
    type: '772',
    ifindex: '1',
    flags: '0x9',
  };
  for (const [file, value] of Object.entries(attributes)) await put(path.join(dir, file), `${value}\n`);
  await link(`../../${rel}`, path.join(sys, 'class', 'net', 'lo'));
};

export const writeFunctions = async (sys: string, functions: readonly PciFunctionSpec[]): Promise<void> => {
  for (const fn of functions) await writePciFunction(sys, fn);
};
