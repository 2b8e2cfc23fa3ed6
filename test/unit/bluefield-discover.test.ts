import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, open, readFile, rm, symlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { pino, type Logger } from 'pino';
import {
  discoverCards,
  listRshimDevices,
  normalizePciAddress,
  parseMiscFields,
  parseRshimDevName,
  selectCard,
  type DiscoveredCard,
} from '../../agent/hardware/bluefield/discover.js';
import { classifyFunction, mstDevicePrefix } from '../../agent/hardware/bluefield/pci-ids.js';
import { parseVpd } from '../../agent/hardware/bluefield/vpd.js';
import type { HardwarePaths } from '../../agent/hardware/paths.js';
import { AgentError, CancelledError } from '../../agent/util/errors.js';
import { put } from '../support/sysfs-tree.js';

// Fixtures stay in the source tree; the compiled test runs from dist/test/unit.
const FIXTURES = fileURLToPath(new URL('../../../test/fixtures/bluefield/discover/', import.meta.url));
const fixture = (name: string): Promise<string> => readFile(path.join(FIXTURES, name), 'utf8');

/** A fixture's misc text with DEV_NAME changed, for layouts no capture shows. */
const miscNaming = async (devName: string): Promise<string> =>
  (await fixture('misc-bf2-pcie-level0.txt')).replace(/^DEV_NAME .*$/m, `DEV_NAME        ${devName}`);

let root: string;
let counter = 0;

before(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'bma-bf-discover-'));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

/* ----------------------------------------------------------------- VPD bytes */

const largeResource = (tag: number, data: Buffer): Buffer => {
  const header = Buffer.from([tag, data.length & 0xff, data.length >> 8]);
  return Buffer.concat([header, data]);
};

const keyword = (name: string, value: string | Buffer): Buffer => {
  const data = typeof value === 'string' ? Buffer.from(value, 'latin1') : value;
  return Buffer.concat([Buffer.from(name, 'latin1'), Buffer.from([data.length]), data]);
};

interface VpdSpec {
  id?: string;
  ro?: Record<string, string>;
  rw?: Record<string, string>;
  badChecksum?: boolean;
  end?: boolean;
}

/** VPD laid out as Mellanox cards have it: ID string, VPD-R ending in RV, VPD-W, end tag. */
const buildVpd = (spec: VpdSpec): Buffer => {
  const parts: Buffer[] = [];
  if (spec.id !== undefined) parts.push(largeResource(0x82, Buffer.from(spec.id, 'latin1')));
  if (spec.ro) {
    const keywords = Object.entries(spec.ro).map(([name, value]) => keyword(name, value));
    // RV: checksum byte plus 4 reserved bytes; the sum from byte 0 through the checksum is zero.
    const rvData = Buffer.alloc(5);
    const body = Buffer.concat([
      ...keywords,
      Buffer.from('RV', 'latin1'),
      Buffer.from([rvData.length]),
      rvData,
    ]);
    const resource = largeResource(0x90, body);
    const before = Buffer.concat([...parts, resource]);
    const checksumOffset = before.length - rvData.length;
    let sum = 0;
    for (let i = 0; i < checksumOffset; i += 1) sum = (sum + (before[i] ?? 0)) & 0xff;
    before[checksumOffset] = (256 - sum + (spec.badChecksum ? 1 : 0)) & 0xff;
    parts.length = 0;
    parts.push(before);
  }
  if (spec.rw) {
    const keywords = Object.entries(spec.rw).map(([name, value]) => keyword(name, value));
    parts.push(largeResource(0x91, Buffer.concat([...keywords, keyword('RW', Buffer.alloc(16))])));
  }
  if (spec.end !== false) parts.push(Buffer.from([0x78]));
  return Buffer.concat(parts);
};

const BF2_VPD: VpdSpec = {
  id: 'BlueField-2 DPU 25GbE Dual-Port SFP56, Crypto Enabled, 16GB on-board DDR, 1GbE OOB management, Tall Bracket',
  ro: {
    PN: 'MBF2H332A-AEEOT',
    EC: 'A6',
    V2: 'MBF2H332A-AEEOT',
    SN: 'MT2133X12345',
    V3: '5c9a0b2e4f9eec118000043f72a45a9c',
    VA: 'MLX:MN=MLNX:CSKU=V2:UUID=V3:PCI=V0:MODL=BF2H332A',
    V0: 'PCIeGen4 x8',
  },
  rw: { V1: 'N/A' },
};

/* ----------------------------------------------------------------- machine trees */

interface FunctionSpec {
  address: string;
  device: string;
  class: string;
  vendor?: string;
  netdevs?: string[];
  vpd?: Buffer;
}

interface MachineSpec {
  functions: FunctionSpec[];
  /** /dev/rshimN entries; misc null = the directory without a misc file. */
  rshims?: Array<{ index: number; misc: string | null }>;
  /** /dev/mst names; absent = no /dev/mst at all. */
  mst?: string[];
}

const buildMachine = async (spec: MachineSpec): Promise<HardwarePaths> => {
  counter += 1;
  const base = path.join(root, `m${counter}`);
  const paths: HardwarePaths = {
    sys: path.join(base, 'sys'),
    dev: path.join(base, 'dev'),
    proc: path.join(base, 'proc'),
  };
  await mkdir(path.join(paths.sys, 'bus', 'pci', 'devices'), { recursive: true });
  await mkdir(paths.dev, { recursive: true });
  for (const fn of spec.functions) {
    const directory = path.join(paths.sys, 'devices', 'pci0000:00', fn.address);
    await put(path.join(directory, 'vendor'), `${fn.vendor ?? '0x15b3'}\n`);
    await put(path.join(directory, 'device'), `0x${fn.device}\n`);
    await put(path.join(directory, 'class'), `0x${fn.class}\n`);
    for (const netdev of fn.netdevs ?? []) {
      await put(path.join(directory, 'net', netdev, 'address'), '0c:42:a1:00:00:00\n');
    }
    if (fn.vpd) await put(path.join(directory, 'vpd'), fn.vpd);
    await symlink(
      `../../../devices/pci0000:00/${fn.address}`,
      path.join(paths.sys, 'bus', 'pci', 'devices', fn.address),
    );
  }
  for (const rshim of spec.rshims ?? []) {
    const directory = path.join(paths.dev, `rshim${rshim.index}`);
    await mkdir(directory, { recursive: true });
    await put(path.join(directory, 'boot'), '');
    if (rshim.misc !== null) await put(path.join(directory, 'misc'), rshim.misc);
  }
  if (spec.mst) {
    await mkdir(path.join(paths.dev, 'mst'), { recursive: true });
    for (const name of spec.mst) await put(path.join(paths.dev, 'mst', name), '');
  }
  return paths;
};

interface CapturedLog {
  logger: Logger;
  records: Array<{ level: number; msg: string; [key: string]: unknown }>;
}

const captureLog = (): CapturedLog => {
  const records: CapturedLog['records'] = [];
  const logger = pino(
    { level: 'debug' },
    { write: (line: string) => void records.push(JSON.parse(line) as CapturedLog['records'][number]) },
  );
  return { logger, records };
};

const only = (cards: DiscoveredCard[]): DiscoveredCard => {
  assert.equal(cards.length, 1, JSON.stringify(cards, null, 2));
  const [card] = cards;
  assert.ok(card);
  return card;
};

const nic = (address: string, device: string, netdevs: string[] = [], vpd?: Buffer): FunctionSpec => ({
  address,
  device,
  class: '020000',
  netdevs,
  ...(vpd ? { vpd } : {}),
});

/* ================================================================= PCI IDs */

describe('PCI function classification', () => {
  it('tells NIC PFs, rshim and livefish functions apart by device ID and class, never by function number', () => {
    assert.deepEqual(classifyFunction('0x15b3', '0xa2d2', '0x020000'), { role: 'nic', generation: 'BF1' });
    assert.deepEqual(classifyFunction('0x15b3', '0xa2d6', '0x020700'), { role: 'nic', generation: 'BF2' });
    assert.deepEqual(classifyFunction('0x15B3', '0xA2DC', '0x020000'), { role: 'nic', generation: 'BF3' });
    assert.deepEqual(classifyFunction('0x15b3', '0xc2d2', '0x080100'), { role: 'rshim', generation: 'BF1' });
    assert.deepEqual(classifyFunction('0x15b3', '0xc2d3', '0x080100'), { role: 'rshim', generation: 'BF2' });
    assert.deepEqual(classifyFunction('0x15b3', '0xc2d4', '0x080100'), { role: 'rshim', generation: 'BF3' });
    // The existing inventory tree classes its c2d5 as 0x058000: the ID alone is enough.
    assert.deepEqual(classifyFunction('0x15b3', '0xc2d5', '0x058000'), { role: 'rshim', generation: 'BF3' });
    assert.deepEqual(classifyFunction('0x15b3', '0xc2d9', '0x080100'), { role: 'rshim', generation: null });
    for (const [id, generation] of [
      ['0211', 'BF1'],
      ['0214', 'BF2'],
      ['0215', 'BF2'],
      ['021c', 'BF3'],
      ['021d', 'BF3'],
    ] as const) {
      assert.deepEqual(classifyFunction('0x15b3', `0x${id}`, '0x0c0000'), { role: 'livefish', generation });
    }
  });

  it('ignores ConnectX NICs, VFs, the auxiliary channel and other vendors', () => {
    assert.equal(classifyFunction('0x15b3', '0x101d', '0x020000'), null);
    assert.equal(classifyFunction('0x15b3', '0x101e', '0x020000'), null);
    assert.equal(classifyFunction('0x15b3', '0xc2d1', '0x020000'), null);
    assert.equal(classifyFunction('0x8086', '0xc2d3', '0x080100'), null);
    assert.equal(classifyFunction(null, '0xa2d6', '0x020000'), null);
    assert.equal(classifyFunction('0x15b3', 'garbage', '0x020000'), null);
  });

  it('names MFT devices after the decimal device ID', () => {
    assert.equal(mstDevicePrefix('BF1'), 'mt41682_pciconf');
    assert.equal(mstDevicePrefix('BF2'), 'mt41686_pciconf');
    assert.equal(mstDevicePrefix('BF3'), 'mt41692_pciconf');
  });
});

/* ================================================================= misc and DEV_NAME */

describe('rshim misc', () => {
  it('reads the key lines of real misc outputs', async () => {
    const level0 = parseMiscFields(await fixture('misc-bf2-pcie-level0.txt'));
    assert.equal(level0.get('DEV_NAME'), 'pcie-0000:ca:00.2');
    assert.equal(level0.get('DEV_INFO'), 'BlueField-2(Rev 1)');
    assert.equal(level0.get('BOOT_TIMEOUT'), '150 (seconds)');
    const level1 = parseMiscFields(await fixture('misc-bf2-pcie-level1.txt'));
    assert.equal(level1.get('BOOT_RESET_SKIP'), '0 (1: skip)');
    assert.equal(level1.get('PEER_MAC'), '00:00:00:00:00:00 (rw)');
    const bf3 = parseMiscFields(await fixture('misc-bf3-usb-secure-nic.txt'));
    assert.equal(bf3.get('SECURE_NIC_MODE'), '1 (0:no, 1:yes)');
    assert.equal(bf3.get('UP_TIME'), '179752(s)');
  });

  it('stops at the log block of DISPLAY_LEVEL 2 and tolerates indentation', () => {
    const fields = parseMiscFields(
      [
        '    DISPLAY_LEVEL   2 (0:basic, 1:advanced, 2:log)',
        '    DEV_NAME        pcie-0000:03:00.2',
        '---------------------------------------',
        '             Log Messages',
        '---------------------------------------',
        ' INFO[BL2]: start',
        'DEV_NAME        pcie-0000:ff:00.2',
      ].join('\n'),
    );
    assert.equal(fields.get('DEV_NAME'), 'pcie-0000:03:00.2');
    assert.equal(fields.get('INFO[BL2]:'), undefined);
  });

  it('parses every DEV_NAME form', () => {
    assert.deepEqual(parseRshimDevName('pcie-0000:03:00.2'), {
      kind: 'pcie',
      function: '0000:03:00.2',
      slot: '0000:03:00',
    });
    assert.deepEqual(parseRshimDevName('pcie-04:00.2'), {
      kind: 'pcie',
      function: '0000:04:00.2',
      slot: '0000:04:00',
    });
    assert.deepEqual(parseRshimDevName('pcie-lf-0000:05:00.0'), {
      kind: 'pcie_lf',
      function: '0000:05:00.0',
      slot: '0000:05:00',
    });
    assert.deepEqual(parseRshimDevName('PCIE-0000:CA:00.2').kind, 'unknown');
    assert.deepEqual(parseRshimDevName('pcie-0000:CA:00.2'), {
      kind: 'pcie',
      function: '0000:ca:00.2',
      slot: '0000:ca:00',
    });
    assert.deepEqual(parseRshimDevName('usb-1.0'), { kind: 'usb', location: '1.0' });
    assert.deepEqual(parseRshimDevName('usb-2-1.7'), { kind: 'usb', location: '2-1.7' });
    assert.deepEqual(parseRshimDevName(''), { kind: 'unknown' });
    assert.deepEqual(parseRshimDevName('pcie-zz:00.2'), { kind: 'unknown' });
    assert.equal(normalizePciAddress('e2:00.1'), '0000:e2:00.1');
    assert.equal(normalizePciAddress('e2:00'), null);
  });
});

/* ================================================================= VPD */

describe('PCI VPD', () => {
  it('reads the ID string, VPD-R and VPD-W keywords and checks RV', () => {
    const vpd = parseVpd(buildVpd(BF2_VPD));
    assert.equal(vpd.idString, BF2_VPD.id);
    assert.deepEqual(vpd.readOnly, BF2_VPD.ro);
    assert.deepEqual(vpd.readWrite, { V1: 'N/A' });
    assert.equal(vpd.checksumValid, true);
    assert.equal(vpd.complete, true);
    assert.deepEqual(vpd.problems, []);
  });

  it('reports a wrong checksum without dropping the data', () => {
    const vpd = parseVpd(buildVpd({ ...BF2_VPD, badChecksum: true }));
    assert.equal(vpd.checksumValid, false);
    assert.equal(vpd.readOnly.SN, 'MT2133X12345');
  });

  it('never throws on a truncated VPD and keeps every keyword read before the cut', () => {
    const full = buildVpd(BF2_VPD);
    for (let length = 0; length <= full.length; length += 1) {
      const vpd = parseVpd(full.subarray(0, length));
      assert.equal(vpd.complete, length === full.length, `length ${length}`);
      if (length > 0 && length < full.length) assert.ok(vpd.problems.length > 0, `length ${length}`);
      for (const [name, value] of Object.entries(vpd.readOnly)) assert.equal(value, BF2_VPD.ro?.[name]);
    }
    // Cut inside VPD-W: the ID string and every VPD-R keyword are still there.
    const cut = parseVpd(full.subarray(0, full.length - 10));
    assert.equal(cut.idString, BF2_VPD.id);
    assert.deepEqual(cut.readOnly, BF2_VPD.ro);
  });

  it('survives garbage, erased VPD and padding after the end tag', () => {
    assert.deepEqual(parseVpd(Buffer.alloc(64, 0xff)).readOnly, {});
    assert.equal(parseVpd(Buffer.alloc(0)).complete, false);
    let seed = 7;
    for (let round = 0; round < 500; round += 1) {
      const bytes = Buffer.alloc(1 + (round % 97));
      for (let i = 0; i < bytes.length; i += 1) {
        seed = (seed * 1103515245 + 12345) & 0x7fffffff;
        bytes[i] = seed & 0xff;
      }
      parseVpd(bytes);
    }
    const padded = parseVpd(Buffer.concat([buildVpd(BF2_VPD), Buffer.alloc(100, 0xff)]));
    assert.equal(padded.complete, true);
    assert.equal(padded.readOnly.PN, 'MBF2H332A-AEEOT');
    // A keyword whose name is not two letters ends VPD-R there.
    const broken = Buffer.concat([
      largeResource(0x82, Buffer.from('X')),
      largeResource(
        0x90,
        Buffer.concat([keyword('PN', 'P1'), Buffer.from([0x00, 0x01, 0x02, 0x41]), keyword('SN', 'S')]),
      ),
      Buffer.from([0x78]),
    ]);
    const parsed = parseVpd(broken);
    assert.deepEqual(parsed.readOnly, { PN: 'P1' });
    assert.ok(parsed.problems.some((problem) => problem.includes('no keyword')));
  });

  it('keeps binary vendor keywords as hex', () => {
    const vpd = parseVpd(buildVpd({ id: 'x', ro: { V9: '\u0001\u0002\u00ff' } }));
    assert.equal(vpd.readOnly.V9, '0102ff');
  });
});

/* ================================================================= topologies */

describe('discoverCards', () => {
  it('finds a dual-port BF2 with its rshim at .2, maps /dev/rshim0 by DEV_NAME and reads its VPD', async () => {
    const paths = await buildMachine({
      functions: [
        { address: '0000:00:17.0', device: 'a182', class: '010601', vendor: '0x8086' },
        nic('0000:ca:00.0', 'a2d6', ['ens1f0np0'], buildVpd(BF2_VPD)),
        nic('0000:ca:00.1', 'a2d6', ['ens1f1np1']),
        { address: '0000:ca:00.2', device: 'c2d3', class: '080100' },
      ],
      rshims: [{ index: 0, misc: await fixture('misc-bf2-pcie-level0.txt') }],
    });
    const card = only(await discoverCards(paths));
    assert.deepEqual(card, {
      slot: '0000:ca:00',
      generation: 'BF2',
      nicFunctions: ['0000:ca:00.0', '0000:ca:00.1'],
      rshimFunction: '0000:ca:00.2',
      recovery: false,
      rshim: {
        index: 0,
        path: path.join(paths.dev, 'rshim0'),
        devName: 'pcie-0000:ca:00.2',
        devInfo: 'BlueField-2(Rev 1)',
        tmfifo: 'tmfifo_net0',
      },
      rshimMatch: 'pcie',
      mstDevice: null,
      mstCandidates: [],
      serial: 'MT2133X12345',
      partNumber: 'MBF2H332A-AEEOT',
      description: BF2_VPD.id,
      netdevs: ['ens1f0np0', 'ens1f1np1'],
    });
  });

  it('finds the rshim at .3 when the auxiliary channel (c2d1) holds .2, and lists the mst names', async () => {
    const paths = await buildMachine({
      functions: [
        nic('0000:10:00.0', 'a2d6'),
        nic('0000:10:00.1', 'a2d6'),
        { address: '0000:10:00.2', device: 'c2d1', class: '020000' },
        { address: '0000:10:00.3', device: 'c2d3', class: '080100' },
      ],
      rshims: [{ index: 0, misc: await miscNaming('pcie-0000:10:00.3') }],
      mst: ['mt41686_pciconf0', 'mt41686_pciconf0.1', 'mt49873_pciconf0.2'],
    });
    const card = only(await discoverCards(paths));
    assert.deepEqual(card.nicFunctions, ['0000:10:00.0', '0000:10:00.1']);
    assert.equal(card.rshimFunction, '0000:10:00.3');
    assert.equal(card.rshim?.index, 0);
    assert.deepEqual(card.mstCandidates, [
      path.join(paths.dev, 'mst', 'mt41686_pciconf0'),
      path.join(paths.dev, 'mst', 'mt41686_pciconf0.1'),
    ]);
    assert.equal(card.mstDevice, path.join(paths.dev, 'mst', 'mt41686_pciconf0'));
    // No VPD file: identity unknown, not an error.
    assert.equal(card.serial, null);
    assert.equal(card.description, null);
  });

  it('finds the rshim at .1 on a single-PF card whose VFs follow it', async () => {
    const vfs = ['0000:81:00.2', '0000:81:00.3', '0000:81:00.7', '0000:81:01.0', '0000:81:01.1'].map(
      (address): FunctionSpec => ({
        address,
        device: '101e',
        class: '020000',
        netdevs: [`vf${address.slice(-3)}`],
      }),
    );
    const paths = await buildMachine({
      functions: [
        nic('0000:81:00.0', 'a2d6', ['enp129s0f0np0']),
        { address: '0000:81:00.1', device: 'c2d3', class: '080100' },
        ...vfs,
      ],
      rshims: [{ index: 0, misc: await miscNaming('pcie-0000:81:00.1') }],
    });
    const card = only(await discoverCards(paths));
    assert.deepEqual(card.nicFunctions, ['0000:81:00.0']);
    assert.equal(card.rshimFunction, '0000:81:00.1');
    assert.deepEqual(card.netdevs, ['enp129s0f0np0']);
    assert.equal(card.rshim?.devName, 'pcie-0000:81:00.1');
  });

  it('sorts two cards by slot, maps each rshim by its DEV_NAME whatever the index order, and splits the mst names', async () => {
    const bf3Misc = (await miscNaming('pcie-0000:e2:00.2')).replace(
      'BlueField-2(Rev 1)',
      'BlueField-3(Rev 1)',
    );
    const paths = await buildMachine({
      functions: [
        nic('0000:e2:00.0', 'a2dc', ['ens7f0np0']),
        nic('0000:e2:00.1', 'a2dc', ['ens7f1np1']),
        // A rshim ID not in the tables: its DMA class still marks it.
        { address: '0000:e2:00.2', device: 'c2d9', class: '080100' },
        nic('0000:3b:00.0', 'a2d6', ['ens1f0']),
        nic('0000:3b:00.1', 'a2d6', ['ens1f1']),
        { address: '0000:3b:00.2', device: 'c2d3', class: '080100' },
      ],
      rshims: [
        { index: 0, misc: bf3Misc },
        { index: 1, misc: await miscNaming('pcie-0000:3b:00.2') },
      ],
      mst: ['mt41686_pciconf0', 'mt41686_pciconf0.1', 'mt41692_pciconf0', 'mt41692_pciconf0.1'],
    });
    const cards = await discoverCards(paths);
    assert.deepEqual(
      cards.map((card) => [
        card.slot,
        card.generation,
        card.rshimFunction,
        card.rshim?.index,
        card.rshim?.tmfifo,
      ]),
      [
        ['0000:3b:00', 'BF2', '0000:3b:00.2', 1, 'tmfifo_net1'],
        ['0000:e2:00', 'BF3', '0000:e2:00.2', 0, 'tmfifo_net0'],
      ],
    );
    assert.equal(cards[0]?.mstDevice, path.join(paths.dev, 'mst', 'mt41686_pciconf0'));
    assert.equal(cards[1]?.mstDevice, path.join(paths.dev, 'mst', 'mt41692_pciconf0'));
    assert.equal(cards[1]?.rshim?.devInfo, 'BlueField-3(Rev 1)');
  });

  it('leaves mstDevice unset when two cards of one generation share the mst names', async () => {
    const paths = await buildMachine({
      functions: [nic('0000:3b:00.0', 'a2d6'), nic('0000:5e:00.0', 'a2d6')],
      mst: ['mt41686_pciconf0', 'mt41686_pciconf1'],
    });
    const cards = await discoverCards(paths);
    assert.equal(cards.length, 2);
    for (const card of cards) {
      assert.equal(card.mstDevice, null);
      assert.equal(card.mstCandidates.length, 2);
    }
  });

  it('reports a livefish-only card as recovery, reached through rshim pcie_lf', async () => {
    const paths = await buildMachine({
      functions: [{ address: '0000:05:00.0', device: '0214', class: '050000' }],
      rshims: [{ index: 0, misc: await miscNaming('pcie-lf-0000:05:00.0') }],
    });
    const card = only(await discoverCards(paths));
    assert.equal(card.generation, 'BF2');
    assert.equal(card.recovery, true);
    assert.deepEqual(card.nicFunctions, []);
    assert.equal(card.rshimFunction, '0000:05:00.0');
    assert.equal(card.rshim?.devName, 'pcie-lf-0000:05:00.0');
    assert.deepEqual(card.netdevs, []);
  });

  it('gives a USB rshim to the only card and says so', async () => {
    const paths = await buildMachine({
      // The host-side rshim function is gone (disabled for the host); the BMC's USB path remains.
      functions: [nic('0000:e2:00.0', 'a2dc'), nic('0000:e2:00.1', 'a2dc')],
      rshims: [{ index: 0, misc: await fixture('misc-bf3-usb-secure-nic.txt') }],
    });
    const log = captureLog();
    const card = only(await discoverCards(paths, { logger: log.logger }));
    assert.equal(card.rshimFunction, null);
    assert.equal(card.rshim?.devName, 'usb-3.3');
    assert.equal(card.rshimMatch, 'usb_single_card');
    assert.ok(log.records.some((record) => record.level === 30 && /USB rshim given/.test(record.msg)));
  });

  it('does not guess which of several cards a USB rshim belongs to', async () => {
    const paths = await buildMachine({
      functions: [nic('0000:3b:00.0', 'a2d6'), nic('0000:e2:00.0', 'a2d6')],
      rshims: [{ index: 0, misc: await fixture('misc-bf2-usb.txt') }],
    });
    const log = captureLog();
    const cards = await discoverCards(paths, { logger: log.logger });
    assert.deepEqual(
      cards.map((card) => card.rshim),
      [null, null],
    );
    assert.ok(
      log.records.some((record) => record.level === 40 && /USB rshim left unmapped/.test(record.msg)),
    );
  });

  it('maps an older DEV_NAME without the PCI domain (BF1)', async () => {
    const paths = await buildMachine({
      functions: [
        nic('0000:04:00.0', 'a2d2'),
        nic('0000:04:00.1', 'a2d2'),
        { address: '0000:04:00.2', device: 'c2d2', class: '080100' },
      ],
      rshims: [{ index: 0, misc: await fixture('misc-bf1-pcie-no-domain.txt') }],
    });
    const card = only(await discoverCards(paths));
    assert.equal(card.generation, 'BF1');
    assert.equal(card.rshim?.devName, 'pcie-04:00.2');
    assert.equal(card.rshim?.devInfo, 'BlueField-1(Rev 0)');
  });

  it('ignores a ConnectX that is not a BlueField', async () => {
    const connectx: FunctionSpec[] = [
      nic('0000:3b:00.0', '101d', ['ens2f0np0']),
      nic('0000:3b:00.1', '101d', ['ens2f1np1']),
    ];
    assert.deepEqual(await discoverCards(await buildMachine({ functions: connectx })), []);
    const paths = await buildMachine({
      functions: [
        ...connectx,
        nic('0000:e2:00.0', 'a2d6'),
        { address: '0000:e2:00.2', device: 'c2d3', class: '080100' },
      ],
      rshims: [{ index: 0, misc: await fixture('misc-bf2-pcie-level1.txt') }],
    });
    const card = only(await discoverCards(paths));
    assert.equal(card.slot, '0000:e2:00');
    assert.equal(card.rshim?.devName, 'pcie-0000:e2:00.2');
  });

  it('leaves the rshim unmapped when misc is missing, and warns', async () => {
    const paths = await buildMachine({
      functions: [nic('0000:ca:00.0', 'a2d6'), { address: '0000:ca:00.2', device: 'c2d3', class: '080100' }],
      rshims: [{ index: 0, misc: null }],
    });
    const log = captureLog();
    const card = only(await discoverCards(paths, { logger: log.logger }));
    assert.equal(card.rshim, null);
    assert.equal(card.rshimFunction, '0000:ca:00.2');
    assert.ok(log.records.some((record) => record.level === 40 && /misc is missing/.test(record.msg)));
    const [entry] = await listRshimDevices(paths);
    assert.equal(entry?.miscReadable, false);
    assert.equal(entry?.device.devName, '');
  });

  it('gives up on a misc that never answers', async () => {
    const paths = await buildMachine({
      functions: [nic('0000:ca:00.0', 'a2d6'), { address: '0000:ca:00.2', device: 'c2d3', class: '080100' }],
      rshims: [{ index: 0, misc: null }],
    });
    const fifo = path.join(paths.dev, 'rshim0', 'misc');
    await promisify(execFile)('mkfifo', [fifo]);
    const started = Date.now();
    const card = only(await discoverCards(paths, { readTimeoutMs: 200 }));
    assert.ok(Date.now() - started < 3000);
    assert.equal(card.rshim, null);
    // Let the blocked open finish so no thread stays stuck on the FIFO.
    const writer = await open(fifo, 'w');
    await writer.close();
  });

  it('returns nothing for a host without BlueField, and stops when cancelled', async () => {
    const paths = await buildMachine({ functions: [] });
    assert.deepEqual(await discoverCards(paths), []);
    const controller = new AbortController();
    controller.abort(new CancelledError());
    await assert.rejects(discoverCards(paths, { signal: controller.signal }), (error: unknown) => {
      assert.ok(AgentError.is(error));
      assert.equal(error.code, 'CANCELLED');
      return true;
    });
  });
});

/* ================================================================= selectCard */

describe('selectCard', () => {
  const card = (slot: string, index: number, serial: string): DiscoveredCard => ({
    slot,
    generation: 'BF2',
    nicFunctions: [`${slot}.0`, `${slot}.1`],
    rshimFunction: `${slot}.2`,
    recovery: false,
    rshim: {
      index,
      path: `/dev/rshim${index}`,
      devName: `pcie-${slot}.2`,
      devInfo: null,
      tmfifo: `tmfifo_net${index}`,
    },
    rshimMatch: 'pcie',
    mstDevice: null,
    mstCandidates: [],
    serial,
    partNumber: null,
    description: null,
    netdevs: [`ens${index}f0`],
  });
  const cards = [card('0000:3b:00', 1, 'MT1'), card('0000:e2:00', 0, 'MT2')];

  it('finds a card by slot, function, rshim, tmfifo, netdev or serial', () => {
    for (const name of [
      '0000:e2:00',
      'e2:00',
      '0000:e2:00.1',
      'e2:00.2',
      'rshim0',
      '/dev/rshim0',
      'tmfifo_net0',
      'ens0f0',
      'MT2',
    ]) {
      assert.equal(selectCard(cards, name).slot, '0000:e2:00', name);
    }
  });

  it('takes the only card without a name and refuses to guess between several', () => {
    assert.equal(selectCard([cards[0] as DiscoveredCard]).slot, '0000:3b:00');
    assert.throws(
      () => selectCard(cards),
      (error: unknown) => AgentError.is(error) && error.code === 'INVALID_PARAMS',
    );
    assert.throws(
      () => selectCard([]),
      (error: unknown) => AgentError.is(error) && error.code === 'BLUEFIELD_NOT_FOUND',
    );
    assert.throws(
      () => selectCard(cards, 'rshim7'),
      (error: unknown) => AgentError.is(error) && error.code === 'BLUEFIELD_NOT_FOUND',
    );
  });
});
