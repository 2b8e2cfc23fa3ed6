import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { classifyLogLine, diffLogLines, READY_MARKERS } from '../../agent/hardware/bluefield/rshim/log.js';
import {
  parseLogLine,
  parseMisc,
  readMisc,
  setMisc,
  writeMisc,
} from '../../agent/hardware/bluefield/rshim/misc.js';
import { findBootHolders, preflightRshim } from '../../agent/hardware/bluefield/rshim/preflight.js';
import { DEFAULT_PATHS, type HardwarePaths } from '../../agent/hardware/paths.js';
import { rejectsWithCode } from '../support/agent-errors.js';

// Tests run from dist/test/unit, the fixtures stay in the source tree.
const fixture = (name: string): string =>
  readFileSync(new URL(`../../../test/fixtures/bluefield/rshim/${name}`, import.meta.url), 'utf8');

/** The log lines of a bfb-install transcript, as the daemon holds them. */
const transcriptLog = (name: string): string[] =>
  fixture(name)
    .split('\n')
    .filter((line) => /^ (INFO|WARN|ERR|ASSERT)\[/.test(line));

const BANNER = [
  '---------------------------------------',
  '             Log Messages',
  '---------------------------------------',
];

/** A DISPLAY_LEVEL 2 snapshot: key lines as `%-16s`, then the banner and the log. */
const levelTwo = (log: readonly string[], keys: Record<string, string> = {}): string => {
  const all: Record<string, string> = {
    DISPLAY_LEVEL: '2 (0:basic, 1:advanced, 2:log)',
    BOOT_MODE: '1 (0:rshim, 1:emmc, 2:emmc-boot-swap)',
    BOOT_TIMEOUT: '300 (seconds)',
    DROP_MODE: '0 (0:normal, 1:drop)',
    DEV_NAME: 'pcie-0000:03:00.2',
    DEV_INFO: 'BlueField-3(Rev 1)',
    SECURE_NIC_MODE: '0 (0:no, 1:yes)',
    ...keys,
  };
  const lines = Object.entries(all).map(([key, value]) => `${key.padEnd(16)}${value}`);
  return [...lines, ...BANNER, ...log, ''].join('\n');
};

describe('misc parsing (real outputs)', () => {
  it('BF2 over PCIe, older daemon, level 0', () => {
    const misc = parseMisc(fixture('misc-bf2-pcie-level0-lshca85.txt'));
    assert.equal(misc.displayLevel, 0);
    assert.equal(misc.bootMode, 1);
    assert.equal(misc.bootTimeoutS, 150);
    assert.equal(misc.dropMode, false);
    assert.equal(misc.devName, 'pcie-0000:ca:00.2');
    assert.equal(misc.devInfo, 'BlueField-2(Rev 1)');
    assert.equal(misc.values.OPN_STR, 'N/A');
    assert.equal(misc.values.SW_RESET, '0 (1: reset)');
    assert.equal(misc.secureNicMode, null);
    assert.equal(misc.upTimeS, null);
    assert.equal(misc.bfMode, null);
    assert.equal(misc.log, null);
  });

  it('BF2 at level 1 keeps the advanced keys', () => {
    const misc = parseMisc(fixture('misc-bf2-pcie-level1-ansible.txt'));
    assert.equal(misc.displayLevel, 1);
    assert.equal(misc.bootTimeoutS, 100);
    assert.equal(misc.values.BOOT_RESET_SKIP, '0 (1: skip)');
    assert.equal(misc.values.PEER_MAC, '00:00:00:00:00:00 (rw)');
    assert.equal(misc.values.VLAN_ID, '0 0 (rw)');
    assert.equal(misc.devName, 'pcie-0000:e2:00.2');
    assert.equal(Object.keys(misc.values).length, 11);
  });

  it('the man page examples, indented, with BF_MODE and a short BF1 DEV_NAME', () => {
    const usb = parseMisc(fixture('misc-bf2-usb-level0-man.txt'));
    assert.equal(usb.bfMode, 'DPU mode');
    assert.equal(usb.devName, 'usb-1.1');
    assert.equal(usb.values.USB_TIMEOUT, '20 (seconds)');
    assert.equal(usb.values.FORCE_CMD, '0 (1: send Force command)');
    const bf1 = parseMisc(fixture('misc-bf1-pcie-level1-man.txt'));
    assert.equal(bf1.devName, 'pcie-04:00.2');
    assert.equal(bf1.devInfo, 'BlueField-1(Rev 0)');
    assert.equal(bf1.dropMode, null, 'this build printed no DROP_MODE');
  });

  it('BF3: UP_TIME without a space and SECURE_NIC_MODE', () => {
    const misc = parseMisc(fixture('misc-bf3-usb-secure-readme.txt'));
    assert.equal(misc.upTimeS, 179752);
    assert.equal(misc.secureNicMode, true);
    assert.equal(misc.values.OPN_STR, '9009D3B400ENEA');
    assert.equal(misc.devInfo, 'BlueField-3(Rev 1)');
  });

  it('a line with a single space, as a web page rendered it', () => {
    assert.equal(parseMisc(fixture('misc-bmc-devname-grep.txt')).devName, 'usb-1.0');
  });

  it('the BF3 boot log at level 2', () => {
    const log = transcriptLog('bfb-install-log-bf3-bf-bundle-2.7.0-with-cfg.txt');
    assert.equal(log.length, 31);
    const misc = parseMisc(levelTwo(log));
    assert.equal(misc.displayLevel, 2);
    assert.equal(misc.devInfo, 'BlueField-3(Rev 1)');
    assert.equal(misc.log?.length, 31);
    assert.deepEqual(misc.log?.[0], {
      level: 'INFO',
      module: 'PSC',
      text: 'PSC BL1 START',
      raw: ' INFO[PSC]: PSC BL1 START',
    });
    assert.deepEqual(misc.log?.[4], {
      level: 'INFO',
      module: 'BL2',
      text: 'DDR POST passed',
      raw: ' INFO[BL2]: DDR POST passed',
    });
    // The published trailing space after "UEFI Secure Boot" is not part of the line.
    assert.ok(
      misc.log?.some(
        (line) => line.raw === ' INFO[UEFI]: UEFI Secure Boot' && line.text === 'UEFI Secure Boot',
      ),
    );
    assert.deepEqual(misc.log?.at(-1), {
      level: 'INFO',
      module: 'MISC',
      text: 'Installation finished',
      raw: ' INFO[MISC]: Installation finished',
    });
  });

  it('an empty log block is an empty log, not a missing one', () => {
    assert.deepEqual(parseMisc(levelTwo([])).log, []);
  });

  it('log lines without the banner still form the log', () => {
    const misc = parseMisc(
      `DISPLAY_LEVEL   2 (0:basic, 1:advanced, 2:log)\n INFO[BL2]: start\n ERR[MISC]: x\n`,
    );
    assert.equal(misc.log?.length, 2);
    assert.equal(misc.displayLevel, 2);
  });

  it('drops an unterminated last line (a file caught mid-rewrite)', () => {
    const misc = parseMisc(levelTwo([' INFO[BL2]: start']) + ' INFO[MISC]: DPU is re');
    assert.deepEqual(
      misc.log?.map((line) => line.raw),
      [' INFO[BL2]: start'],
    );
  });

  it('log lines of every kind', () => {
    assert.deepEqual(parseLogLine(' WARN[UEFI]: PK not configured'), {
      level: 'WARN',
      module: 'UEFI',
      text: 'PK not configured',
      raw: ' WARN[UEFI]: PK not configured',
    });
    assert.equal(parseLogLine(' ERR[MISC]: Installation failed').level, 'ERR');
    assert.equal(parseLogLine(' ASSERT[BL31]: plat_bf.c:120').level, 'ASSERT');
    assert.deepEqual(parseLogLine(' PANIC(BL31): PC = 0x00000000ff02a3c4'), {
      level: 'PANIC',
      module: 'BL31',
      text: 'PC = 0x00000000ff02a3c4',
      raw: ' PANIC(BL31): PC = 0x00000000ff02a3c4',
    });
    assert.deepEqual(parseLogLine(' Exception(BL2): syndrome = 0x96000010(Data Abort)'), {
      level: 'EXCEPTION',
      module: 'BL2',
      text: 'syndrome = 0x96000010(Data Abort)',
      raw: ' Exception(BL2): syndrome = 0x96000010(Data Abort)',
    });
    assert.deepEqual(parseLogLine('   x0 = 0x0000000000000000   x1 = 0x00000000ff02a3c4'), {
      level: 'OTHER',
      module: null,
      text: 'x0 = 0x0000000000000000   x1 = 0x00000000ff02a3c4',
      raw: '   x0 = 0x0000000000000000   x1 = 0x00000000ff02a3c4',
    });
  });
});

describe('log lines: ready, failed, pending', () => {
  it('every ready marker, as the installer and bfup write them', () => {
    const lines: Record<string, string> = {
      'DPU is ready': ' INFO[MISC]: DPU is ready',
      'Linux up': ' INFO[MISC]: Linux up',
      'Rebooting...': ' INFO[MISC]: Installation finished. Rebooting...',
      'In Enhanced NIC mode': ' INFO[MISC]: In Enhanced NIC mode',
      'Runtime upgrade finished': ' INFO[MISC]: Runtime upgrade finished',
    };
    assert.deepEqual(Object.keys(lines), [...READY_MARKERS]);
    for (const [marker, line] of Object.entries(lines))
      assert.deepEqual(classifyLogLine(line), { kind: 'ready', marker });
  });

  it('lines that look close but are not ready', () => {
    for (const line of [
      ' INFO[MISC]: Rebooting BMC..',
      ' INFO[MISC]: Rebooting',
      ' INFO[MISC]: Installation finished',
      ' INFO[MISC]: Linux upgrade started',
      ' INFO[MISC]: DPU is readying the eMMC',
    ]) {
      assert.deepEqual(classifyLogLine(line), { kind: 'pending' }, line);
    }
  });

  it('no line of the real BF1 and BF3 logs counts as ready or failed', () => {
    const lines = [
      ...transcriptLog('bfb-install-log-bf3-bf-bundle-2.7.0-with-cfg.txt'),
      ...transcriptLog('bfb-install-log-bf1-pr40.txt'),
    ];
    assert.equal(lines.length, 31 + 13);
    for (const line of lines) assert.deepEqual(classifyLogLine(line), { kind: 'pending' }, line);
  });

  it('failures: CRITICAL ERROR, any ERR[...], PANIC(...), Exception(...)', () => {
    for (const line of [
      ' INFO[MISC]: CRITICAL ERROR: DDR training failed',
      ' ERR[MISC]: Installation failed',
      ' ERR[MISC]: NIC firmware update failed',
      ' ERR[BL2]: DDR init failed',
      ' PANIC(BL31): PC = 0x00000000ff02a3c4',
      ' Exception(BL2): syndrome = 0x96000010(Data Abort)',
    ]) {
      assert.deepEqual(classifyLogLine(line), { kind: 'failed', line: line.trim() }, line);
    }
    // A failure that mentions a marker is still a failure.
    assert.equal(classifyLogLine(' ERR[MISC]: Installation failed. Rebooting...').kind, 'failed');
  });
});

describe('new lines between two snapshots', () => {
  const log = transcriptLog('bfb-install-log-bf3-bf-bundle-2.7.0-with-cfg.txt');

  it('a ring that grew', () => {
    assert.deepEqual(diffLogLines(log.slice(0, 10), log.slice(0, 14)), log.slice(10, 14));
    assert.deepEqual(diffLogLines(log.slice(0, 10), log.slice(0, 10)), []);
    assert.deepEqual(diffLogLines([], log.slice(0, 3)), log.slice(0, 3));
  });

  it('a ring that dropped its oldest lines as it filled', () => {
    assert.deepEqual(diffLogLines(log.slice(0, 20), log.slice(6, 25)), log.slice(20, 25));
    assert.deepEqual(diffLogLines(log.slice(0, 20), log.slice(19, 22)), log.slice(20, 22));
    assert.deepEqual(diffLogLines(log.slice(0, 20), log.slice(5, 20)), []);
  });

  it('a ring that wrapped past everything, or was reset', () => {
    assert.deepEqual(diffLogLines(log.slice(0, 20), log.slice(22, 30)), log.slice(22, 30));
    // After a reset the new boot logs the same first lines again: they are new, not old.
    const previousInstall = [...log, ' INFO[MISC]: DPU is ready'];
    assert.deepEqual(diffLogLines(previousInstall, log.slice(0, 4)), log.slice(0, 4));
    assert.deepEqual(diffLogLines(previousInstall, []), []);
  });

  it('repeated lines are matched by the longest overlap', () => {
    const a = ' INFO[BL2]: start';
    const b = ' INFO[BL31]: start';
    assert.deepEqual(diffLogLines([a, b, a, b], [a, b, a, b, a]), [a]);
    assert.deepEqual(diffLogLines([a, b, a], [b, a, b, a]), [b, a]);
  });
});

describe('misc reads and writes', () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'bma-misc-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('reads a fresh snapshot every time', async () => {
    const file = path.join(dir, 'fresh');
    await writeFile(file, fixture('misc-bf2-pcie-level0-lshca85.txt'));
    assert.equal((await readMisc(file)).bootTimeoutS, 150);
    await writeFile(file, fixture('misc-bf2-pcie-level1-ansible.txt'));
    assert.equal((await readMisc(file)).bootTimeoutS, 100);
  });

  it('writes one command at offset 0', async () => {
    const file = path.join(dir, 'command');
    await writeFile(file, fixture('misc-bf2-pcie-level0-lshca85.txt'));
    await writeMisc(file, 'DISPLAY_LEVEL', 2);
    assert.equal(await readFile(file, 'utf8'), 'DISPLAY_LEVEL 2\n');
    await assert.rejects(writeMisc(file, 'DISPLAY_LEVEL', '2\nSW_RESET 1'));
  });

  it('a missing misc is RSHIM_NOT_FOUND, and is never created', async () => {
    const file = path.join(dir, 'absent');
    await rejectsWithCode(readMisc(file), 'RSHIM_NOT_FOUND', /absent/);
    await rejectsWithCode(writeMisc(file, 'DISPLAY_LEVEL', 2), 'RSHIM_NOT_FOUND');
    await assert.rejects(readFile(file));
  });

  it('re-reads until a stand-in daemon shows the value, writing again when a write is lost', async () => {
    const file = path.join(dir, 'daemon');
    let level = 0;
    let lost = 1;
    const render = (): string => levelTwo([], { DISPLAY_LEVEL: `${level} (0:basic, 1:advanced, 2:log)` });
    await writeFile(file, render());
    let published = render();
    let running = true;
    const daemon = (async () => {
      while (running) {
        await sleep(30);
        const text = await readFile(file, 'utf8');
        if (text === published) continue;
        const command = /^DISPLAY_LEVEL (\d)/.exec(text);
        // The first command is lost, as when the file is replaced under a write.
        if (command?.[1] !== undefined && lost-- <= 0) level = Number(command[1]);
        published = render();
        await writeFile(`${file}.tmp`, published);
        await rename(`${file}.tmp`, file);
      }
    })();
    try {
      const result = await setMisc(file, 'DISPLAY_LEVEL', 2, { settleMs: 300, pollMs: 20 });
      assert.equal(result.applied, true);
      await sleep(100);
      assert.equal((await readMisc(file)).displayLevel, 2);
    } finally {
      running = false;
      await daemon;
    }
  });

  it('says when the value never shows', async () => {
    const file = path.join(dir, 'deaf');
    const text = levelTwo([], { DISPLAY_LEVEL: '0 (0:basic, 1:advanced, 2:log)' });
    await writeFile(file, text);
    // A daemon that ignores the command: it republishes its old text (atomically, as a daemon would).
    let n = 0;
    const restore = setInterval(() => {
      const tmp = `${file}.${(n += 1)}`;
      void writeFile(tmp, text).then(() => rename(tmp, file));
    }, 5);
    try {
      const result = await setMisc(file, 'DISPLAY_LEVEL', 2, { writes: 2, settleMs: 60, pollMs: 25 });
      assert.equal(result.applied, false);
    } finally {
      clearInterval(restore);
      await sleep(20);
    }
  });
});

describe('preflight', () => {
  let dir = '';
  let rshim = '';
  const children: ChildProcess[] = [];
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'bma-preflight-'));
    rshim = path.join(dir, 'dev', 'rshim0');
    await mkdir(rshim, { recursive: true });
    await writeFile(path.join(rshim, 'boot'), '');
  });
  after(async () => {
    for (const child of children) child.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });

  const setMiscText = (keys: Record<string, string>): Promise<void> =>
    writeFile(path.join(rshim, 'misc'), levelTwo([], keys));

  it('passes a free, host-owned, unlocked rshim and returns its misc', async () => {
    await setMiscText({ BOOT_TIMEOUT: '120 (seconds)' });
    const result = await preflightRshim(rshim, DEFAULT_PATHS);
    assert.equal(result.bootPath, path.join(rshim, 'boot'));
    assert.equal(result.misc.bootTimeoutS, 120);
  });

  it('RSHIM_NOT_FOUND without the directory, its boot or its misc', async () => {
    await rejectsWithCode(
      preflightRshim(path.join(dir, 'dev', 'rshim7'), DEFAULT_PATHS),
      'RSHIM_NOT_FOUND',
      /rshim7 is missing/,
    );
    const noBoot = path.join(dir, 'dev', 'rshim1');
    await mkdir(noBoot);
    await rejectsWithCode(preflightRshim(noBoot, DEFAULT_PATHS), 'RSHIM_NOT_FOUND', /boot is missing/);
    await writeFile(path.join(noBoot, 'boot'), '');
    await rejectsWithCode(preflightRshim(noBoot, DEFAULT_PATHS), 'RSHIM_NOT_FOUND', /misc/);
  });

  it('RSHIM_OWNED_BY_BMC in drop mode, RSHIM_LOCKED in secure NIC mode', async () => {
    await setMiscText({ DROP_MODE: '1 (0:normal, 1:drop)' });
    await rejectsWithCode(preflightRshim(rshim, DEFAULT_PATHS), 'RSHIM_OWNED_BY_BMC', /drop mode/);
    await setMiscText({ SECURE_NIC_MODE: '1 (0:no, 1:yes)' });
    await rejectsWithCode(preflightRshim(rshim, DEFAULT_PATHS), 'RSHIM_LOCKED', /secure NIC mode/);
  });

  it('RSHIM_BUSY names the process that holds boot open for writing', async () => {
    await setMiscText({});
    const boot = path.join(rshim, 'boot');
    const writer = spawn('sh', ['-c', 'exec sleep 30 >> "$1"', 'sh', boot], { stdio: 'ignore' });
    const reader = spawn('sh', ['-c', 'exec sleep 30 < "$1"', 'sh', boot], { stdio: 'ignore' });
    children.push(writer, reader);
    const comm = (pid: number | undefined): Promise<string> =>
      readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '');
    // Both past their redirection: exec'd into sleep.
    for (
      let i = 0;
      i < 100 && ((await comm(writer.pid)) !== 'sleep\n' || (await comm(reader.pid)) !== 'sleep\n');
      i += 1
    )
      await sleep(20);
    const error = await rejectsWithCode(
      preflightRshim(rshim, DEFAULT_PATHS),
      'RSHIM_BUSY',
      /held open by sleep \(pid \d+\)/,
    );
    assert.equal(error.details.pid, writer.pid);
    assert.equal(error.details.comm, 'sleep');
    assert.deepEqual(
      (await findBootHolders(boot, DEFAULT_PATHS)).map((holder) => holder.pid),
      [writer.pid],
      'a reader is no competitor',
    );
    writer.kill('SIGKILL');
    reader.kill('SIGKILL');
  });

  it('scans the proc root it is given', async () => {
    await setMiscText({});
    const boot = path.join(rshim, 'boot');
    const proc = path.join(dir, 'proc');
    const fake = async (pid: number, fd: number, flags: string, comm: string): Promise<void> => {
      await mkdir(path.join(proc, String(pid), 'fd'), { recursive: true });
      await mkdir(path.join(proc, String(pid), 'fdinfo'), { recursive: true });
      await symlink(boot, path.join(proc, String(pid), 'fd', String(fd)));
      await writeFile(
        path.join(proc, String(pid), 'fdinfo', String(fd)),
        `pos:\t0\nflags:\t${flags}\nmnt_id:\t25\n`,
      );
      await writeFile(path.join(proc, String(pid), 'comm'), `${comm}\n`);
    };
    await fake(4242, 3, '0100000', 'minicom');
    await mkdir(path.join(proc, 'self'), { recursive: true });
    const paths: HardwarePaths = { ...DEFAULT_PATHS, proc };
    assert.equal((await preflightRshim(rshim, paths)).misc.dropMode, false);
    await fake(4343, 1, '0100001', 'bfb-install');
    const error = await rejectsWithCode(
      preflightRshim(rshim, paths),
      'RSHIM_BUSY',
      /bfb-install \(pid 4343\)/,
    );
    assert.deepEqual(error.details.holders, [{ pid: 4343, comm: 'bfb-install', fd: 1 }]);
  });
});
