import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { mkdtemp, readFile, readlink, realpath, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildBfb, BFB_IMAGE_IDS, bfbInfo, sampleBfb } from '../support/bfb-builder.js';
import {
  createBlueFieldLab,
  RSHIM_LOG_WORDS,
  SIM_FIXTURES,
  type BlueFieldLab,
  type LabCard,
} from '../support/bluefield-sim/lab.js';
import { readBfb } from '../support/bluefield-sim/bfb-reader.js';
import {
  LogRing,
  messageWords,
  parseTimeline,
  renderMisc,
  type MiscView,
} from '../support/bluefield-sim/rshim-sim.js';
import { haveTools } from '../support/loop-lab.js';

/*
 * Self-tests of the simulated BlueField hardware, driven only with the shell tools a person (or
 * bfb-install) would use on a real host: `cat bfb cfg > boot`, `cat misc`, and misc commands
 * written at offset 0 with dd conv=notrunc. They hold the simulator to the real formats and
 * behaviours independently of the agent.
 */

const skip =
  (process.getuid?.() !== 0 ? 'needs root (mknod, mount namespaces for the bf.cfg hook)' : null) ??
  (await haveTools('mkfifo', 'mknod', 'unshare', 'bash', 'dd', 'cat', 'sha256sum')) ??
  false;
if (skip) process.stderr.write(`# skipping BlueField simulator tests: ${skip}\n`);

const run = (file: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> =>
  new Promise((resolve) => {
    execFile(file, args, { encoding: 'utf8', timeout: 30_000 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });

/**
 * `cat FILES > boot`, as bfb-install pushes a stream. When cat succeeds, waits until the DPU side
 * has taken the whole stream, so what follows sees this session's state and not the last one's.
 */
const push = async (card: LabCard, ...files: string[]) => {
  const before = (await card.sessions()).length;
  const result = await run('sh', [
    '-c',
    'out=$1; shift; cat "$@" > "$out"',
    'push',
    `${card.rshimPath}/boot`,
    ...files,
  ]);
  if (result.code === 0) await card.waitForSession({ after: before });
  return result;
};

const catMisc = async (card: LabCard): Promise<string> => {
  const result = await run('cat', [`${card.rshimPath}/misc`]);
  assert.equal(result.code, 0, result.stderr);
  return result.stdout;
};

/** Writes one misc command at offset 0 without truncating, as a CUSE write would land. */
const miscCommand = (card: LabCard, command: string) =>
  run('sh', [
    '-c',
    'printf "%s\\n" "$1" | dd of="$2" conv=notrunc status=none',
    'misc',
    command,
    `${card.rshimPath}/misc`,
  ]);

const miscValue = (text: string, key: string): string | undefined =>
  text
    .split('\n')
    .find((line) => line.startsWith(`${key} `))
    ?.slice(16);

/** Writes a command and waits until misc shows `key` with `value` (commands are taken on a poll). */
const setMisc = async (card: LabCard, key: string, value: string): Promise<void> => {
  assert.equal((await miscCommand(card, `${key} ${value}`)).code, 0);
  const deadline = Date.now() + 2000;
  for (;;) {
    const state = await card.state();
    const shown: Record<string, number> = {
      DISPLAY_LEVEL: state.displayLevel,
      BOOT_TIMEOUT: state.bootTimeout,
      CLEAR_ON_READ: state.clearOnRead,
      DROP_MODE: state.dropMode,
    };
    if (String(shown[key]) === value) return;
    assert.ok(Date.now() < deadline, `misc never took ${key} ${value}`);
    await sleep(20);
  }
};

const logPart = (misc: string): string[] => {
  const at = misc.indexOf('             Log Messages\n');
  if (at === -1) return [];
  return misc
    .slice(at)
    .split('\n')
    .slice(2)
    .filter((line) => line !== '');
};

const waitFor = async (probe: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> => {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    assert.ok(Date.now() < deadline, 'timed out');
    await sleep(25);
  }
};

const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

/** Reads misc the way bfb-install does (CLEAR_ON_READ 1, every poll) until a line matches. */
const follow = async (card: LabCard, until: RegExp, timeoutMs = 15_000): Promise<string[]> => {
  const seen: string[] = [];
  const deadline = Date.now() + timeoutMs;
  while (!seen.some((line) => until.test(line))) {
    assert.ok(Date.now() < deadline, `no ${until} in ${JSON.stringify(seen)}`);
    seen.push(...logPart(await catMisc(card)));
    await sleep(100);
  }
  return seen;
};

const sampleLines = (file: string): string[] =>
  fs
    .readFileSync(path.join(SIM_FIXTURES, file), 'utf8')
    .split('\n')
    .filter((line) => /^ (INFO|ERR|WARN)\[/.test(line));

/** The ordered subsequence check: every expected line appears after the one before. */
const assertInOrder = (actual: string[], expected: string[]): void => {
  let at = 0;
  for (const line of expected) {
    const found = actual.indexOf(line, at);
    assert.ok(found !== -1, `missing or out of order: ${JSON.stringify(line)} in\n${actual.join('\n')}`);
    at = found + 1;
  }
};

interface VpdFields {
  id: string;
  fields: Record<string, string>;
  checksumOk: boolean;
  endTag: boolean;
}

/** Walks PCI VPD resources the way lspci -vv does. */
const parseVpd = (vpd: Buffer): VpdFields => {
  const result: VpdFields = { id: '', fields: {}, checksumOk: false, endTag: false };
  let at = 0;
  while (at < vpd.length) {
    const tag = vpd[at]!;
    if (tag === 0x78) {
      result.endTag = at === vpd.length - 1;
      break;
    }
    assert.ok(tag & 0x80, `large resource expected at ${at}`);
    const length = vpd.readUInt16LE(at + 1);
    const body = vpd.subarray(at + 3, at + 3 + length);
    if (tag === 0x82) result.id = body.toString('latin1');
    if (tag === 0x90) {
      let f = 0;
      while (f < body.length) {
        const keyword = body.subarray(f, f + 2).toString('latin1');
        const size = body[f + 2]!;
        const value = body.subarray(f + 3, f + 3 + size);
        if (keyword === 'RV') {
          let sum = 0;
          for (const byte of vpd.subarray(0, at + 3 + f + 3 + 1)) sum += byte;
          result.checksumOk = sum % 256 === 0;
        } else result.fields[keyword] = value.toString('latin1');
        f += 3 + size;
      }
    }
    at += 3 + length;
  }
  return result;
};

describe('BlueField simulator: the formats', () => {
  it('renders misc exactly as the captured rshim outputs', () => {
    const sample = (file: string, from: RegExp) =>
      fs
        .readFileSync(path.join(SIM_FIXTURES, file), 'utf8')
        .split('\n')
        .filter((line) => from.test(line));
    const base: MiscView = {
      generation: 'BF2',
      legacy: true,
      displayLevel: 0,
      bfMode: 'DPU mode',
      bootMode: 1,
      bootTimeout: 150,
      usbTimeout: 40,
      dropMode: 0,
      devName: 'pcie-0000:ca:00.2',
      devInfo: 'BlueField-2(Rev 1)',
      opn: 'N/A',
      upTime: 0,
      secureNicMode: 0,
      forceCmd: 0,
      bootResetSkip: 0,
      peerMac: '00:00:00:00:00:00',
      pxeId: 0,
      vlan: [0, 0],
      clearOnRead: 0,
      log: [],
    };
    // lshca issue 85: a BF2 over PCIe, daemon of 2022.
    const issue85 = sample('rshim-misc-bf2-pcie-lshca-issue85.txt', /^[A-Z_]+ +\S/);
    assert.deepEqual(renderMisc(base).trimEnd().split('\n'), issue85);
    // rshim README: a BF3 (UP_TIME, SECURE_NIC_MODE); indented in the man page text.
    const readme = fs
      .readFileSync(path.join(SIM_FIXTURES, 'rshim-misc-doc-examples-rshim-man.txt'), 'utf8')
      .split('# --- README.md')[1]!
      .split('\n')
      .filter((line) => /^ {6}[A-Z_]+ /.test(line))
      .map((line) => line.slice(6));
    const bf3 = renderMisc({
      ...base,
      generation: 'BF3',
      bootTimeout: 100,
      devName: 'usb-3.3',
      devInfo: 'BlueField-3(Rev 1)',
      opn: '9009D3B400ENEA',
      upTime: 179752,
      secureNicMode: 1,
    });
    assert.deepEqual(bf3.trimEnd().split('\n'), readme);
    // The current daemon adds BF_MODE (BF3), USB_TIMEOUT and FORCE_CMD, and CLEAR_ON_READ at level 1.
    const current = renderMisc({ ...base, generation: 'BF3', legacy: false, displayLevel: 1 }).split('\n');
    assert.deepEqual(current.map((line) => line.slice(0, 16).trim()).filter(Boolean), [
      'DISPLAY_LEVEL',
      'BF_MODE',
      'BOOT_MODE',
      'BOOT_TIMEOUT',
      'USB_TIMEOUT',
      'DROP_MODE',
      'SW_RESET',
      'DEV_NAME',
      'DEV_INFO',
      'OPN_STR',
      'UP_TIME',
      'SECURE_NIC_MODE',
      'FORCE_CMD',
      'BOOT_RESET_SKIP',
      'PEER_MAC',
      'PXE_ID',
      'VLAN_ID',
      'CLEAR_ON_READ',
    ]);
    // Level-1 lines as the captured BF2 fixture shows them.
    const level1 = sample(
      'rshim-misc-bf2-display-level1-and-mst-status.txt',
      /^(BOOT_RESET_SKIP|PEER_MAC|PXE_ID|VLAN_ID) /,
    );
    const ours = renderMisc({ ...base, displayLevel: 1 }).split('\n');
    for (const line of level1) assert.ok(ours.includes(line), `missing ${line}`);
  });

  it('replays the captured install log lines in their order and fits the tail in the log ring', () => {
    const steps = parseTimeline(fs.readFileSync(path.join(SIM_FIXTURES, 'timeline-bf3.tsv'), 'utf8'));
    assertInOrder(
      steps.map((step) => step.line),
      sampleLines('bfb-install-log-bf3-bf-bundle-2.7.0-with-cfg.txt'),
    );
    const bf1 = parseTimeline(fs.readFileSync(path.join(SIM_FIXTURES, 'timeline-bf1.tsv'), 'utf8'));
    assertInOrder(
      bf1.filter((step) => step.phase === 'boot').map((step) => step.line),
      sampleLines('bfb-install-log-bf1-pr40.txt').filter((line) => !line.includes('[MISC]')),
    );
    // Each boot starts the ring afresh; a whole boot, even the longest install, fits in it.
    const words = (list: typeof steps): number =>
      list.reduce((sum, step) => sum + messageWords(step.line.replace(/^ \w+\[\w+\]: /, '')), 0);
    for (const gen of ['bf1', 'bf2', 'bf3']) {
      const timeline = parseTimeline(fs.readFileSync(path.join(SIM_FIXTURES, `timeline-${gen}.tsv`), 'utf8'));
      const install = timeline.filter(
        (step) => (step.phase === 'boot' || step.phase === 'install') && !step.when.startsWith('fault:'),
      );
      const next = timeline.filter(
        (step) => (step.phase === 'emmc' || step.phase === 'up') && step.when !== 'nic',
      );
      assert.ok(words(install) < RSHIM_LOG_WORDS, `${gen}: ${words(install)} words in the install boot`);
      assert.ok(words(next) < RSHIM_LOG_WORDS, `${gen}: ${words(next)} words in the next boot`);
    }
  });

  it('cuts and drops log lines the way the kernel fills the 127-word ring', () => {
    const ring = new LogRing(RSHIM_LOG_WORDS);
    const line = ' INFO[MISC]: 0123456789abcdef0123456789abcdef'; // 32 characters: 5 words
    let added = 0;
    while (ring.words + 5 < RSHIM_LOG_WORDS - 1) {
      assert.deepEqual(ring.add(line), { dropped: false, truncated: false });
      added += 1;
    }
    assert.equal(added, 25);
    // 125 words used: the next message gets one word (8 characters), then nothing fits.
    assert.deepEqual(ring.add(line), { dropped: false, truncated: true });
    assert.equal(ring.lines.at(-1), ' INFO[MISC]: 01234567');
    assert.deepEqual(ring.add(line), { dropped: true, truncated: false });
    assert.equal(ring.words, RSHIM_LOG_WORDS);
    ring.consumeUpTo(ring.lastSeq);
    assert.equal(ring.words, 0);
    assert.deepEqual(ring.add(' INFO[MISC]: DPU is ready'), { dropped: false, truncated: false });
    assert.equal(new LogRing(null).add(line.repeat(40)).truncated, false);
  });

  it('reads BFBs the way mlx-mkbfb does', () => {
    const good = sampleBfb('bf-bundle-test', 4096);
    const parsed = readBfb(Buffer.concat([good, Buffer.from('KEY=1\n')]));
    assert.equal(parsed.valid, true);
    assert.equal(parsed.version, 'bf-bundle-test');
    assert.equal(parsed.bfbBytes, good.length);
    assert.equal(parsed.trailer.toString(), 'KEY=1\n');
    assert.deepEqual(
      parsed.images.map((image) => image.name),
      ['bl2', 'info', 'image', 'initramfs'],
    );
    const corrupt = Buffer.from(good);
    corrupt[good.length - 3]! ^= 0xff;
    assert.match(readBfb(corrupt).error ?? '', /CRC mismatch/);
    assert.match(readBfb(good.subarray(0, good.length - 8)).error ?? '', /truncated/);
    assert.match(readBfb(Buffer.from('not a bfb at all, just text....')).error ?? '', /bad magic/);
    const badVersion = buildBfb([{ id: BFB_IMAGE_IDS.bl2, data: Buffer.from('x'), major: 2 }]);
    assert.match(readBfb(badVersion).error ?? '', /version 2\./);
    const unannounced = Buffer.concat([
      buildBfb([{ id: BFB_IMAGE_IDS.info, data: bfbInfo('v') }]),
      buildBfb([{ id: BFB_IMAGE_IDS.image, data: Buffer.from('y') }]),
    ]);
    // The first BFB ends (empty bitmap); the rest is trailer, as the DPU would see it.
    assert.equal(readBfb(unannounced).valid, true);
    assert.ok(readBfb(unannounced).trailerBytes > 0);
  });
});

describe('BlueField simulator: the PCI tree', { skip }, () => {
  let lab: BlueFieldLab;
  before(async () => {
    lab = await createBlueFieldLab({
      cards: [
        { generation: 'BF1' },
        { generation: 'BF2', rshimFunction: 3 },
        { generation: 'BF2', rshimFunction: 1, vfs: 2 },
        { generation: 'BF3', mode: 'livefish' },
        { generation: 'BF2', mode: 'separated_host' },
        { generation: 'BF3', linkType: 'ib' },
      ],
      connectx: 1,
    });
  });
  after(async () => {
    await lab?.close();
  });

  const attr = (bdf: string, name: string) =>
    fs.readFileSync(path.join(lab.paths.sys, 'bus', 'pci', 'devices', bdf, name), 'utf8').trim();

  it('lays out each generation and variant as hosts show them', async () => {
    const [bf1, aux, single, livefish, separated, ib] = lab.cards;
    assert.deepEqual(bf1!.bdfs.nic, ['0000:03:00.0', '0000:03:00.1']);
    assert.equal(bf1!.bdfs.rshim, '0000:03:00.2');
    assert.equal(attr('0000:03:00.0', 'device'), '0xa2d2');
    assert.equal(attr('0000:03:00.2', 'device'), '0xc2d2');
    assert.equal(attr('0000:03:00.0', 'vendor'), '0x15b3');
    assert.equal(attr('0000:03:00.0', 'class'), '0x020000');
    assert.equal(attr('0000:03:00.2', 'class'), '0x080100');
    assert.equal(attr('0000:03:00.0', 'revision'), '0x00');

    // .2 is the c2d1 auxiliary channel, rshim at .3 (lspci-mst-bf2-with-aux-comm-channel.txt).
    assert.equal(aux!.bdfs.aux, '0000:17:00.2');
    assert.equal(attr('0000:17:00.2', 'device'), '0xc2d1');
    assert.equal(aux!.bdfs.rshim, '0000:17:00.3');
    assert.equal(attr('0000:17:00.3', 'device'), '0xc2d3');
    assert.equal(aux!.devName, 'pcie-0000:17:00.3');

    // One PF, rshim at .1, VFs from .2 (lspci-host-bf2-single-pf-with-vfs.txt).
    assert.deepEqual(single!.bdfs.nic, ['0000:a3:00.0']);
    assert.equal(single!.bdfs.rshim, '0000:a3:00.1');
    assert.deepEqual(single!.bdfs.vfs, ['0000:a3:00.2', '0000:a3:00.3']);
    assert.equal(attr('0000:a3:00.2', 'device'), '0x101e');
    assert.equal(
      await readlink(path.join(lab.paths.sys, 'bus/pci/devices/0000:a3:00.2/physfn')),
      '../0000:a3:00.0',
    );
    assert.equal(attr('0000:a3:00.0', 'sriov_numvfs'), '2');

    assert.deepEqual(livefish!.bdfs.nic, []);
    assert.equal(livefish!.bdfs.livefish, '0000:ca:00.0');
    assert.equal(attr('0000:ca:00.0', 'device'), '0x021c');
    assert.equal(attr('0000:ca:00.0', 'class'), '0x058000');
    assert.equal(livefish!.devName, 'pcie-lf-0000:ca:00.0');

    assert.equal(separated!.bdfs.rshim, null);
    assert.equal(separated!.rshimPath, null);
    assert.equal(fs.existsSync(path.join(lab.paths.sys, 'bus/pci/devices/0000:e2:00.2')), false);

    assert.equal(attr(ib!.bdfs.nic[0]!, 'class'), '0x020700');
    assert.equal(ib!.netdevs[0], 'ibp129s0f0');
    assert.equal(
      fs.readFileSync(path.join(lab.paths.sys, 'class/net/ibp129s0f0/address'), 'utf8').trim().length,
      59,
    );

    // Not BlueFields: a ConnectX-6 Dx, and an Intel function that reuses device ID a2d2.
    assert.equal(attr(lab.connectx[0]!.nic[0]!, 'device'), '0x101d');
    assert.equal(attr('0000:00:1f.0', 'device'), '0xa2d2');
    assert.equal(attr('0000:00:1f.0', 'vendor'), '0x8086');
  });

  it('matches the function layouts and tmfifo MACs of the captured hosts', () => {
    // `10:00.3 DMA controller: ...` -> { 3: 'DMA controller' }
    const lspci = (file: string): Map<number, string> =>
      new Map(
        [
          ...fs
            .readFileSync(path.join(SIM_FIXTURES, file), 'utf8')
            .matchAll(/^\s*[0-9a-f]{2}:00\.(\d) ([^:]+):/gm),
        ].map((m) => [Number(m[1]), m[2]!]),
      );
    const kind = (bdf: string): string => {
      const cls = attr(bdf, 'class');
      if (cls.startsWith('0x0801')) return 'DMA controller';
      if (cls.startsWith('0x0200')) return 'Ethernet controller';
      return cls;
    };
    const slotOf = (card: LabCard, fn: number) => `${card.slot}.${fn}`;
    for (const [file, card] of [
      ['lspci-mst-bf2-with-aux-comm-channel.txt', lab.card(1)],
      ['lspci-host-bf2-single-pf-with-vfs.txt', lab.card(2)],
    ] as const) {
      for (const [fn, expected] of lspci(file)) {
        if (fn > 3) continue; // the sample's extra VFs
        assert.equal(kind(slotOf(card, fn)), expected, `${file} function ${fn}`);
      }
    }
    const ipA = fs.readFileSync(path.join(SIM_FIXTURES, 'ip-a-tmfifo-two-bf3.txt'), 'utf8');
    for (const m of ipA.matchAll(/(tmfifo_net\d): [\s\S]*?link\/ether (\S+)/g)) {
      assert.equal(
        fs.readFileSync(path.join(lab.paths.sys, 'class/net', m[1]!, 'address'), 'utf8').trim(),
        m[2],
      );
    }
  });

  it('binds NIC functions to mlx5_core and gives them netdevs under class/net', async () => {
    const card = lab.card(0);
    const pf0 = path.join(lab.paths.sys, 'bus/pci/devices', card.bdfs.nic[0]!);
    assert.equal(path.basename(await readlink(path.join(pf0, 'driver'))), 'mlx5_core');
    assert.equal(fs.existsSync(path.join(pf0, 'net', card.netdevs[0]!)), true);
    const classEntry = path.join(lab.paths.sys, 'class/net', card.netdevs[0]!);
    assert.equal(path.basename(await realpath(path.join(classEntry, 'device'))), card.bdfs.nic[0]);
    assert.equal(fs.readFileSync(path.join(classEntry, 'address'), 'utf8').trim(), card.macs[0]);
    assert.equal(fs.readFileSync(path.join(classEntry, 'carrier'), 'utf8').trim(), '1');
    // The host side of tmfifo is a TAP without a device link; MACs as rshim_net.c hands them out.
    assert.deepEqual(
      lab.cards.map((c) => c.tmfifo),
      ['tmfifo_net0', 'tmfifo_net1', 'tmfifo_net2', 'tmfifo_net3', null, 'tmfifo_net4'],
    );
    const tmfifo = (n: number) => path.join(lab.paths.sys, 'class/net', `tmfifo_net${n}`);
    assert.equal(fs.readFileSync(path.join(tmfifo(0), 'address'), 'utf8').trim(), '00:1a:ca:ff:ff:02');
    assert.equal(fs.readFileSync(path.join(tmfifo(1), 'address'), 'utf8').trim(), '00:1a:ca:ff:ff:04');
    assert.equal(fs.existsSync(path.join(tmfifo(0), 'device')), false);
  });

  it('serves a VPD with ID string, VPD-R fields, a good checksum and the end tag', () => {
    for (const card of [lab.card(0), lab.card(2), lab.card(5)]) {
      const vpd = parseVpd(
        fs.readFileSync(path.join(lab.paths.sys, 'bus/pci/devices', card.bdfs.nic[0]!, 'vpd')),
      );
      assert.equal(vpd.checksumOk, true);
      assert.equal(vpd.endTag, true);
      assert.equal(vpd.id, card.vpd?.id);
      assert.equal(vpd.fields.PN, card.vpd?.partNumber);
      assert.equal(vpd.fields.SN, card.vpd?.serial);
      for (const keyword of ['EC', 'V0', 'V2', 'V3', 'VA']) assert.ok(vpd.fields[keyword], keyword);
    }
    assert.match(
      parseVpd(fs.readFileSync(path.join(lab.paths.sys, 'bus/pci/devices/0000:98:00.0/vpd'))).id,
      /ConnectX-6 Dx/,
    );
  });

  it('keeps everything under the lab root and describes the cards for fake tools', async () => {
    assert.ok(lab.paths.sys.startsWith(lab.root) && lab.paths.dev.startsWith(lab.root));
    assert.equal(lab.paths.proc, '/proc');
    const described = JSON.parse(await readFile(path.join(lab.stateDir, 'lab.json'), 'utf8')) as {
      cards: Array<{ slot: string; rshimPath: string | null; serial: string | null }>;
    };
    assert.deepEqual(
      described.cards.map((card) => card.slot),
      lab.cards.map((card) => card.slot),
    );
    assert.equal(described.cards[0]!.serial, lab.card(0).vpd?.serial);
    assert.equal(fs.existsSync(`${lab.card(3).rshimPath}/misc`), true);
    assert.match(await catMisc(lab.card(3)), /DEV_NAME {8}pcie-lf-0000:ca:00\.0\n/);
  });
});

describe('BlueField simulator: misc and installs', { skip }, () => {
  let lab: BlueFieldLab;
  const cycled: Array<[number, string]> = [];
  let work: string;
  before(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), 'bf-sim-test-'));
    let toolsCalled: string[] = [];
    lab = await createBlueFieldLab({
      onPowerCycle: (card, stateDir) => {
        cycled.push([card.index, stateDir]);
        return card.index === 1 ? 'nic' : undefined;
      },
      cards: [{ generation: 'BF3' }, { generation: 'BF2', logWords: null }],
      // This suite reads misc every 100 ms; a shorter pause before the reboot keeps it quick.
      rebootPauseMs: 500,
      installTools: async (binDir, stateDir) => {
        toolsCalled = [binDir, stateDir];
        await writeFile(path.join(binDir, 'mlxconfig'), '#!/bin/sh\nexit 0\n', { mode: 0o755 });
      },
    });
    assert.deepEqual(toolsCalled, [lab.binDir, lab.stateDir]);
  });
  after(async () => {
    await lab?.close();
    await rm(work, { recursive: true, force: true });
  });

  const file = async (name: string, data: Buffer | string): Promise<string> => {
    const target = path.join(work, name);
    await writeFile(target, data);
    return target;
  };

  it('takes misc commands written at offset 0 and answers like the daemon', async () => {
    const card = lab.card(0);
    const before = await catMisc(card);
    assert.equal(miscValue(before, 'DISPLAY_LEVEL'), '0 (0:basic, 1:advanced, 2:log)');
    assert.equal(miscValue(before, 'DEV_NAME'), 'pcie-0000:03:00.2');
    assert.equal(miscValue(before, 'DEV_INFO'), 'BlueField-3(Rev 1)');
    assert.match(miscValue(before, 'UP_TIME') ?? '', /^\d+\(s\)$/);

    await setMisc(card, 'DISPLAY_LEVEL', '1');
    const level1 = await catMisc(card);
    assert.equal(miscValue(level1, 'PEER_MAC'), '00:1a:ca:ff:ff:01 (rw)');
    assert.equal(miscValue(level1, 'CLEAR_ON_READ'), '0 (0:no, 1:yes)');

    // A truncating write (echo > misc) works too.
    assert.equal((await run('sh', ['-c', `echo "BOOT_TIMEOUT 150" > ${card.rshimPath}/misc`])).code, 0);
    await setMisc(card, 'BOOT_TIMEOUT', '150');
    assert.equal(miscValue(await catMisc(card), 'BOOT_TIMEOUT'), '150 (seconds)');

    // Unknown keys and FORCE_CMD outside drop mode are refused (EINVAL) and misc stays whole.
    await miscCommand(card, 'NO_SUCH_KEY 1');
    await miscCommand(card, 'FORCE_CMD 1');
    await sleep(150);
    const commands = await card.commands();
    assert.deepEqual(
      commands.slice(-2).map((c) => [c.text, c.accepted]),
      [
        ['NO_SUCH_KEY 1', false],
        ['FORCE_CMD 1', false],
      ],
    );
    const after = await catMisc(card);
    assert.match(after, /^DISPLAY_LEVEL {3}1 \(0:basic, 1:advanced, 2:log\)\n/);
    assert.equal(miscValue(after, 'FORCE_CMD'), '0 (1: send Force command)');
  });

  it('does not lose a command written through a descriptor opened before a rewrite', async () => {
    const card = lab.card(0);
    const fd = fs.openSync(`${card.rshimPath}/misc`, 'r+');
    try {
      // BF3 misc is rewritten every second for UP_TIME; write after the rewrite replaced this inode.
      await sleep(1200);
      fs.writeSync(fd, 'BOOT_TIMEOUT 77\n', 0);
    } finally {
      fs.closeSync(fd);
    }
    await setMisc(card, 'BOOT_TIMEOUT', '77');
    await setMisc(card, 'BOOT_TIMEOUT', '300');
  });

  it('installs a BFB with bf.cfg: bytes, log, hook, release file', async () => {
    const card = lab.card(0);
    const version = 'bf-bundle-2.9.2-31_25.02_ubuntu-22.04_prod';
    const bfb = await file('bundle.bfb', sampleBfb(version, 48 * 1024));
    const cfgText = [
      "ubuntu_PASSWORD='$1$3B0RIrfX$TlHry93NFUJzg3Nya00rE1'",
      'bfb_modify_os() {',
      '  echo "from bf.cfg" > /mnt/etc/bfb-hook',
      '  cp /mnt/etc/mlnx-release /mnt/etc/release-seen-by-hook',
      '  grep -q bfb_modify_os /proc/self/mountinfo || true',
      '}',
      '',
    ].join('\n');
    const cfg = await file('bf.cfg', cfgText);

    await setMisc(card, 'DISPLAY_LEVEL', '2');
    await setMisc(card, 'CLEAR_ON_READ', '1');
    logPart(await catMisc(card)); // the baseline read clears what was there
    const from = (await card.logLines()).length;

    const started = Date.now();
    const pushed = await push(card, bfb, cfg);
    assert.equal(pushed.code, 0, pushed.stderr);
    const lines = await follow(card, /DPU is ready/);
    const took = Date.now() - started;
    assert.ok(took < 6000, `install took ${took} ms`);

    // What a poller clearing on read saw: every line the DPU logged, once, in order, none lost.
    const logged = (await card.logEntries()).slice(from);
    assert.ok(logged.every((entry) => !entry.dropped && !entry.truncated));
    assert.deepEqual(
      lines,
      logged.map((entry) => entry.line),
    );
    assertInOrder(lines, [
      ' INFO[MISC]: Changing the default password for user ubuntu',
      ' INFO[MISC]: Running bfb_modify_os from bf.cfg',
      ' INFO[MISC]: Ubuntu installation completed',
    ]);
    assertInOrder(lines, [
      ...sampleLines('bfb-install-log-bf3-bf-bundle-2.7.0-with-cfg.txt'),
      ' INFO[MISC]: Rebooting...',
      ' INFO[BL2]: boot mode (emmc)',
      ' INFO[MISC]: Linux up',
      ' INFO[MISC]: DPU is ready',
    ]);

    const got = await card.received();
    const stream = Buffer.concat([await readFile(bfb), await readFile(cfg)]);
    assert.ok(got);
    assert.equal(got.outcome, 'complete');
    assert.equal(got.bytes, stream.length);
    assert.equal(got.sha256, sha256(stream));
    assert.equal((await run('sh', ['-c', `cat ${bfb} ${cfg} | sha256sum`])).stdout.split(' ')[0], got.sha256);
    assert.equal(got.bfbSha256, sha256(await readFile(bfb)));
    assert.equal(got.valid, true);
    assert.equal(got.version, version);
    assert.equal(got.cfg, cfgText);
    assert.equal(got.cfgSyntaxOk, true);
    assert.equal(got.hook?.declared, true);
    assert.equal(got.hook?.exitCode, 0, got.hook?.output);

    assert.equal(await readFile(path.join(card.dpuRoot, 'etc/mlnx-release'), 'utf8'), `${version}\n`);
    assert.equal(await readFile(path.join(card.dpuRoot, 'etc/bfb-hook'), 'utf8'), 'from bf.cfg\n');
    assert.equal(await readFile(path.join(card.dpuRoot, 'etc/release-seen-by-hook'), 'utf8'), `${version}\n`);
    // The hook's /mnt was private to it.
    assert.equal(fs.existsSync('/mnt/etc/bfb-hook'), false);

    const state = await card.state();
    assert.equal(state.phase, 'ready');
    assert.equal(state.installedVersion, version);
    assert.equal(state.bootMode, 1);
    assert.match(miscValue(await catMisc(card), 'UP_TIME') ?? '', /^\d\(s\)$/);
  });

  it('starts the log ring afresh when the SoC resets', async () => {
    const card = lab.card(0);
    await setMisc(card, 'CLEAR_ON_READ', '0');
    const from = (await card.logLines()).length;
    const bfb = await file('ring.bfb', sampleBfb('ring-test', 4096));
    assert.equal((await push(card, bfb)).code, 0);
    await card.waitForLog(/Installation finished/, { from });
    // Nobody reads: everything of this boot so far is still in the ring.
    assert.deepEqual((await card.state()).ring.slice(0, 2), [
      ' INFO[PSC]: PSC BL1 START',
      ' INFO[BL2]: start',
    ]);
    await card.waitForPhase('ready');
    const state = await card.state();
    assert.ok(state.ringWords <= RSHIM_LOG_WORDS, String(state.ringWords));
    // The reboot after the install reset the SoC: the installer's lines went unread.
    assert.equal(state.ring[2], ' INFO[BL2]: boot mode (emmc)');
    assert.ok(!state.ring.includes(' INFO[MISC]: Installation finished'));
    assert.equal(state.ring.at(-1), ' INFO[MISC]: DPU is ready');
    assert.ok((await card.logEntries()).slice(from).every((entry) => !entry.dropped));
  });

  it('installs on two cards at once, each from its own stream', async () => {
    const [a, b] = [lab.card(0), lab.card(1)];
    await setMisc(a, 'CLEAR_ON_READ', '1');
    const fileA = await file('a.bfb', sampleBfb('version-a', 8192));
    const fileB = await file('b.bfb', sampleBfb('version-b', 12_288));
    const [pa, pb] = await Promise.all([push(a, fileA), push(b, fileB)]);
    assert.equal(pa.code + pb.code, 0);
    await Promise.all([a.waitForPhase('ready'), b.waitForPhase('ready')]);
    assert.equal((await a.received())?.sha256, sha256(await readFile(fileA)));
    assert.equal((await b.received())?.sha256, sha256(await readFile(fileB)));
    assert.equal((await b.received())?.cfg, null);
    assert.equal(await readFile(path.join(a.dpuRoot, 'etc/mlnx-release'), 'utf8'), 'version-a\n');
    assert.equal(await readFile(path.join(b.dpuRoot, 'etc/mlnx-release'), 'utf8'), 'version-b\n');
    // BF2 has no PSC; its log (unbounded here) shows the whole install at level 2.
    await setMisc(b, 'DISPLAY_LEVEL', '2');
    const log = logPart(await catMisc(b));
    assert.ok(!log.some((line) => line.includes('[PSC]')));
    // The ring restarted at the reboot after the install.
    assertInOrder(log, [' INFO[BL2]: start', ' INFO[BL2]: boot mode (emmc)', ' INFO[MISC]: DPU is ready']);
    assert.ok(!log.includes(' INFO[MISC]: Installation finished'));
  });

  it('hangs silently on a BFB that fails validation', async () => {
    const card = lab.card(1);
    await setMisc(card, 'CLEAR_ON_READ', '1');
    logPart(await catMisc(card));
    const good = sampleBfb('broken', 8192);
    const badFirst = Buffer.from(good);
    badFirst[30]! ^= 0xff; // inside bl2, the first image
    const before = (await card.sessions()).length;
    const pushed = await push(card, await file('bad.bfb', badFirst));
    // The rshim side takes the bytes; only the DPU knows they are useless.
    assert.equal(pushed.code, 0);
    const got = await card.waitForSession({ after: before });
    assert.equal(got.valid, false);
    assert.match(got.error ?? '', /CRC mismatch/);
    await sleep(400);
    assert.deepEqual(logPart(await catMisc(card)), []);
    assert.equal((await card.state()).phase, 'hung');

    // Truncated after the boot loader: its lines appear, then nothing.
    const truncated = good.subarray(0, good.length - 100);
    const count = (await card.sessions()).length;
    assert.equal((await push(card, await file('short.bfb', truncated))).code, 0);
    const short = await card.waitForSession({ after: count });
    assert.match(short.error ?? '', /truncated/);
    await card.waitForPhase('hung');
    await sleep(200);
    const lines = logPart(await catMisc(card));
    assert.ok(lines.includes(' INFO[BL2]: start'));
    assert.ok(lines.includes(' INFO[BL2]: UEFI loaded'));
    assert.ok(!lines.some((line) => /\[(BL31|UEFI|MISC)\]/.test(line)), lines.join('\n'));
  });

  it('reports bf.cfg but ignores it when bash -n rejects it', async () => {
    const card = lab.card(1);
    const count = (await card.sessions()).length;
    const from = (await card.logLines()).length;
    const cfg = await file('bad.cfg', 'bfb_modify_os() {\n  echo unterminated\n');
    assert.equal((await push(card, await file('c.bfb', sampleBfb('cfg-test', 4096)), cfg)).code, 0);
    const got = await card.waitForSession({ after: count });
    await card.waitForPhase('ready');
    const fresh = (await card.logLines()).slice(from);
    assert.ok(fresh.includes(' INFO[MISC]: Found bf.cfg'));
    assert.ok(!fresh.includes(' INFO[MISC]: Running bfb_modify_os from bf.cfg'));
    const final = (await card.sessions()).find((s) => s.session === got.session);
    assert.equal(final?.cfgSyntaxOk, false);
    assert.equal(final?.hook, null);
  });

  it('reboots from eMMC on SW_RESET and starts over on a power cycle', async () => {
    const card = lab.card(1);
    const before = (await card.logLines()).length;
    await miscCommand(card, 'SW_RESET 1');
    await waitFor(async () => (await card.logLines()).slice(before).includes(' INFO[MISC]: DPU is ready'));
    const after = (await card.logLines()).slice(before);
    assertInOrder(after, [' INFO[BL2]: start', ' INFO[BL2]: boot mode (emmc)', ' INFO[MISC]: DPU is ready']);

    await setMisc(card, 'DISPLAY_LEVEL', '2');
    await card.powerCycle();
    assert.deepEqual(cycled, [[1, lab.stateDir]]);
    const state = await card.state();
    assert.equal(state.mode, 'nic');
    assert.equal(state.displayLevel, 0);
    assert.equal(state.clearOnRead, 0);
    await card.waitForPhase('ready');
    assert.ok((await card.state()).ring.includes(' INFO[MISC]: DPU is ready'));
  });
});

describe('BlueField simulator: BlueField-3 NIC mode', { skip }, () => {
  it('shows NIC mode in misc and ends a boot with "In Enhanced NIC mode"', async () => {
    const lab = await createBlueFieldLab({ cards: [{ generation: 'BF3', mode: 'nic' }] });
    try {
      const card = lab.card(0);
      assert.equal(miscValue(await catMisc(card), 'BF_MODE'), 'NIC mode');
      const from = (await card.logLines()).length;
      await miscCommand(card, 'SW_RESET 1');
      await card.waitForLog('In Enhanced NIC mode', { from });
      assert.ok(!(await card.logLines()).slice(from).some((line) => /Linux up|DPU is ready/.test(line)));
      await card.setMode('dpu');
      assert.equal(miscValue(await catMisc(card), 'BF_MODE'), 'DPU mode');
    } finally {
      await lab.close();
    }
  });
});

describe('BlueField simulator: faults', { skip }, () => {
  let lab: BlueFieldLab;
  let work: string;
  let small: string;
  let big: string;
  before(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), 'bf-sim-faults-'));
    small = path.join(work, 'small.bfb');
    big = path.join(work, 'big.bfb');
    await writeFile(small, sampleBfb('fault-test', 4096));
    // Larger than the pipe buffer and a read, so refusals reach the writer.
    await writeFile(big, sampleBfb('fault-big', 400 * 1024));
    lab = await createBlueFieldLab({
      cards: [
        { generation: 'BF3', staleReady: true, logWords: null },
        { generation: 'BF2', logWords: null, faults: { bmc: true } },
        { generation: 'BF3', logWords: null, faults: { busy: true }, rate: 256 * 1024 },
      ],
      rebootPauseMs: 200,
    });
  });
  after(async () => {
    await lab?.close();
    await rm(work, { recursive: true, force: true });
  });

  const freshLines = async (card: LabCard, from: number): Promise<string[]> =>
    (await card.logLines()).slice(from);

  it('leaves an old "DPU is ready" in the ring for agents without a baseline', async () => {
    const card = lab.card(0);
    await setMisc(card, 'DISPLAY_LEVEL', '2');
    assert.deepEqual(logPart(await catMisc(card)), [' INFO[MISC]: Linux up', ' INFO[MISC]: DPU is ready']);
  });

  it('critical: logs CRITICAL ERROR mid-install and stops', async () => {
    const card = lab.card(0);
    await card.setFault('critical', true);
    const from = (await card.logLines()).length;
    assert.equal((await push(card, small)).code, 0);
    await card.waitForLog(/CRITICAL ERROR/, { from });
    await card.waitForPhase('failed');
    await sleep(300);
    const lines = await freshLines(card, from);
    assert.ok(lines.includes(' INFO[MISC]: Installing OS image'));
    assert.match(lines.at(-1) ?? '', /^ ERR\[MISC\]: CRITICAL ERROR/);
    assert.equal((await card.state()).installedVersion, null);
    assert.equal(fs.existsSync(path.join(card.dpuRoot, 'etc/mlnx-release')), false);
    await card.setFault('critical', false);
  });

  it('err: the installer fails with ERR[MISC]: Installation failed', async () => {
    const card = lab.card(0);
    await card.setFault('err', true);
    const from = (await card.logLines()).length;
    assert.equal((await push(card, small)).code, 0);
    await card.waitForPhase('failed');
    const lines = await freshLines(card, from);
    assert.deepEqual(lines.slice(-2), [
      ' INFO[MISC]: Failed to access target device: /dev/nvme0n1',
      ' ERR[MISC]: Installation failed',
    ]);
    await card.setFault('err', false);
  });

  it('never-ready: installs and reboots but never says Linux up or DPU is ready', async () => {
    const card = lab.card(0);
    await card.setFault('never-ready', true);
    const from = (await card.logLines()).length;
    assert.equal((await push(card, small)).code, 0);
    await card.waitForPhase('failed');
    await sleep(300);
    const lines = await freshLines(card, from);
    assertInOrder(lines, [
      ' INFO[MISC]: Installation finished',
      ' INFO[MISC]: Rebooting...',
      ' INFO[BL2]: boot mode (emmc)',
    ]);
    assert.ok(!lines.some((line) => /Linux up|DPU is ready/.test(line)));
    await card.setFault('never-ready', false);
  });

  it('stall: stops taking the stream; BOOT_TIMEOUT later the writer fails', async () => {
    const card = lab.card(0);
    await setMisc(card, 'BOOT_TIMEOUT', '1');
    await card.setFault('stall', 8192);
    const count = (await card.sessions()).length;
    const started = Date.now();
    const pushed = await push(card, big);
    const took = Date.now() - started;
    assert.notEqual(pushed.code, 0, 'the writer should have failed');
    assert.ok(took >= 900 && took < 5000, `writer failed after ${took} ms`);
    const got = await card.waitForSession({ after: count });
    assert.equal(got.outcome, 'timeout');
    assert.ok((got.stalledAt ?? 0) >= 8192);
    assert.ok(got.bytes < fs.statSync(big).size);
    assert.equal(got.valid, false);
    await card.setFault('stall', false);
    await setMisc(card, 'BOOT_TIMEOUT', '300');
    assert.equal((await push(card, small)).code, 0);
    await card.waitForPhase('ready');
  });

  it('bmc: drop mode refuses boot until FORCE_CMD takes the rshim back', async () => {
    const card = lab.card(1);
    assert.equal(miscValue(await catMisc(card), 'DROP_MODE'), '1 (0:normal, 1:drop)');
    const refused = await push(card, small);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /No such device or address/);
    await miscCommand(card, 'FORCE_CMD 1');
    await waitFor(async () => (await card.state()).dropMode === 0);
    assert.equal(miscValue(await catMisc(card), 'FORCE_CMD'), '0 (1: send Force command)');
    assert.equal((await push(card, small)).code, 0);
    await card.waitForPhase('ready');
    assert.equal((await card.received())?.valid, true);
  });

  it('locked: secure NIC mode shows in misc and refuses boot (BlueField-3 only)', async () => {
    const card = lab.card(0);
    await card.setFault('locked', true);
    assert.equal(miscValue(await catMisc(card), 'SECURE_NIC_MODE'), '1 (0:no, 1:yes)');
    const refused = await push(card, small);
    assert.notEqual(refused.code, 0);
    await card.setFault('locked', false);
    await assert.rejects(lab.card(1).setFault('locked', true), /BlueField-3 only/);
  });

  it('busy: another process holds boot open; writes are refused until it is gone', async () => {
    const card = lab.card(2);
    const pid = card.holderPid();
    assert.ok(pid);
    assert.equal(await readlink(`/proc/${pid}/fd/1`), `${card.rshimPath}/boot`);
    const count = (await card.sessions()).length;
    const refused = await push(card, big);
    assert.notEqual(refused.code, 0);
    const got = await card.waitForSession({ after: count });
    assert.equal(got.outcome, 'refused');
    assert.equal(got.refusedBecause, 'busy');

    await card.setFault('busy', false);
    assert.equal(card.holderPid(), null);
    assert.equal(fs.existsSync(`/proc/${pid}`), false);
    // Paced at 256 KiB/s: the 600 KiB stream takes over two seconds to go in.
    const started = Date.now();
    assert.equal((await push(card, big)).code, 0);
    assert.ok(Date.now() - started > 1800, `paced push took ${Date.now() - started} ms`);
    await card.waitForPhase('ready');
    assert.equal((await card.received())?.sha256, sha256(await readFile(big)));
  });

  it('close() kills the simulators and removes the lab, twice without harm', async () => {
    const extra = await createBlueFieldLab({ cards: [{ generation: 'BF2', faults: { busy: true } }] });
    const holder = extra.card(0).holderPid();
    const misc = `${extra.card(0).rshimPath}/misc`;
    assert.equal(fs.existsSync(misc), true);
    await Promise.all([extra.close(), extra.close()]);
    await extra.close();
    assert.equal(fs.existsSync(extra.root), false);
    assert.ok(holder);
    assert.equal(fs.existsSync(`/proc/${holder}`), false);
  });
});
