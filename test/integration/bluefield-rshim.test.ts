import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, readFileSync } from 'node:fs';
import {
  chmod,
  mkdir,
  mkdtemp,
  open,
  readFile,
  rename,
  rm,
  stat,
  writeFile,
  type FileHandle,
} from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { mergeBfCfg } from '../../agent/hardware/bluefield/bfb/bf-cfg.js';
import { validateBfbFile } from '../../agent/hardware/bluefield/bfb/validator.js';
import type { RshimLogLine } from '../../agent/hardware/bluefield/contracts.js';
import { captureLogBaseline, followInstall } from '../../agent/hardware/bluefield/rshim/follow.js';
import { findBootHolders, preflightRshim } from '../../agent/hardware/bluefield/rshim/preflight.js';
import { pushBootStream, type PushProgress } from '../../agent/hardware/bluefield/rshim/push.js';
import { DEFAULT_PATHS } from '../../agent/hardware/paths.js';
import { rejectsWithCode } from '../support/agent-errors.js';
import { writeLargeBfb } from '../support/bfb-builder.js';

/*
 * The rshim device as files: `boot` is a FIFO drained by a reader process (what the DPU's boot
 * FIFO does), `misc` a plain file that a stand-in daemon in this process rewrites the way the
 * rshim daemon renders it, taking the commands written into it. Real processes, real /proc.
 */

const KEY =
  'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ7nS0mYQxW6a1zYh0f3H2d0b6cT3m2lqJYk7v1x9p0F bm-agent@ramdisk';
const BF3_LOG = readFileSync(
  new URL(
    '../../../test/fixtures/bluefield/rshim/bfb-install-log-bf3-bf-bundle-2.7.0-with-cfg.txt',
    import.meta.url,
  ),
  'utf8',
)
  .split('\n')
  .filter((line) => /^ (INFO|WARN|ERR)\[/.test(line))
  // The sample keeps a published trailing space; the parser drops trailing blanks from every line.
  .map((line) => line.trimEnd());
const PREVIOUS_INSTALL = [
  ...BF3_LOG,
  ' INFO[MISC]: Rebooting...',
  ' INFO[MISC]: Linux up',
  ' INFO[MISC]: DPU is ready',
];

const LEGENDS: Record<string, string> = {
  DISPLAY_LEVEL: ' (0:basic, 1:advanced, 2:log)',
  BOOT_MODE: ' (0:rshim, 1:emmc, 2:emmc-boot-swap)',
  BOOT_TIMEOUT: ' (seconds)',
  DROP_MODE: ' (0:normal, 1:drop)',
  SECURE_NIC_MODE: ' (0:no, 1:yes)',
};

/** Renders misc as the daemon does and applies the commands written into the file. */
class StandInDaemon {
  readonly commands: string[] = [];
  private readonly keys = new Map<string, string>([
    ['DISPLAY_LEVEL', '0'],
    ['BF_MODE', 'DPU mode'],
    ['BOOT_MODE', '1'],
    ['BOOT_TIMEOUT', '300'],
    ['DROP_MODE', '0'],
    ['SW_RESET', '0 (1: reset)'],
    ['DEV_NAME', 'pcie-0000:03:00.2'],
    ['DEV_INFO', 'BlueField-3(Rev 1)'],
    ['OPN_STR', '900-9D3B6-00CV-AA0'],
    ['UP_TIME', '4242(s)'],
    ['SECURE_NIC_MODE', '0'],
  ]);
  private log: string[] = [];
  /** The last files published, open: a write through a descriptor opened before a rewrite still counts. */
  private recent: Array<{ handle: FileHandle; text: string }> = [];
  private dirty = false;
  private timer: NodeJS.Timeout | undefined;
  private busy = false;

  constructor(private readonly file: string) {}

  async start(): Promise<void> {
    await this.publish();
    this.timer = setInterval(() => void this.tick(), 15);
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    while (this.busy) await sleep(5);
    for (const { handle } of this.recent.splice(0)) await handle.close();
  }

  set(key: string, value: string): void {
    this.keys.set(key, value);
    this.dirty = true;
  }

  /** The scratch ring's size in lines; the oldest drop out past it. */
  ringLines = Infinity;

  append(...lines: string[]): void {
    this.log.push(...lines);
    if (this.log.length > this.ringLines) this.log.splice(0, this.log.length - this.ringLines);
    this.dirty = true;
  }

  /** Resolves once the changes so far are in the file. */
  async flush(): Promise<void> {
    while (this.dirty || this.busy) await sleep(5);
  }

  /** What a SoC reset does to the scratch ring. */
  resetLog(): void {
    this.log = [];
    this.dirty = true;
  }

  private render(): string {
    const lines = [...this.keys].map(([key, value]) => `${key.padEnd(16)}${value}${LEGENDS[key] ?? ''}`);
    if (this.keys.get('DISPLAY_LEVEL') === '2') {
      lines.push(
        '---------------------------------------',
        '             Log Messages',
        '---------------------------------------',
      );
      lines.push(...this.log);
    }
    return `${lines.join('\n')}\n`;
  }

  private async publish(): Promise<void> {
    // Cleared before rendering: a change made while this publish awaits makes another one.
    this.dirty = false;
    const text = this.render();
    await writeFile(`${this.file}.tmp`, text);
    const handle = await open(`${this.file}.tmp`, 'r');
    await rename(`${this.file}.tmp`, this.file);
    this.recent.push({ handle, text });
    while (this.recent.length > 4) await this.recent.shift()?.handle.close();
  }

  private async tick(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      for (const entry of this.recent) {
        const { buffer, bytesRead } = await entry.handle.read(Buffer.alloc(64 * 1024), 0, 64 * 1024, 0);
        const text = buffer.subarray(0, bytesRead).toString('utf8');
        // Empty: truncated by a writer whose command is not in yet.
        if (text === entry.text || text === '') continue;
        entry.text = text;
        for (const line of text.split('\n')) {
          const command = /^([A-Z_]+) (\S+)$/.exec(line.trim());
          if (command?.[1] === undefined || command[2] === undefined) continue;
          this.commands.push(line.trim());
          if (this.keys.has(command[1])) this.keys.set(command[1], command[2]);
        }
        this.dirty = true;
      }
      if (this.dirty) await this.publish();
    } finally {
      this.busy = false;
    }
  }
}

/** A reader draining the FIFO into a file; optionally slow, or stopping (fd kept open) after some bytes. */
const READER = `
const fs = require('node:fs');
const [fifo, out, rate, stopAfter] = process.argv.slice(1).map((v, i) => (i < 2 ? v : Number(v)));
const input = fs.openSync(fifo, 'r');
const output = fs.openSync(out, 'w');
const buffer = Buffer.alloc(65536);
const pause = new Int32Array(new SharedArrayBuffer(4));
const started = Date.now();
let total = 0;
while (true) {
  if (stopAfter > 0 && total >= stopAfter) { setInterval(() => {}, 1000); break; }
  const n = fs.readSync(input, buffer, 0, buffer.length, null);
  if (n === 0) break;
  fs.writeSync(output, buffer, 0, n);
  total += n;
  if (rate > 0) {
    const wait = started + (total / rate) * 1000 - Date.now();
    if (wait > 0) Atomics.wait(pause, 0, 0, wait);
  }
}
`;

const sha256File = (file: string): Promise<string> =>
  new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    createReadStream(file)
      .on('data', (chunk) => hash.update(chunk))
      .on('end', () => resolve(hash.digest('hex')))
      .on('error', reject);
  });

const exited = (child: ChildProcess): Promise<number | null> =>
  child.exitCode !== null || child.signalCode !== null
    ? Promise.resolve(child.exitCode)
    : new Promise((resolve) => child.once('exit', (code) => resolve(code)));

describe('rshim boot FIFO and misc file', () => {
  let dir = '';
  let rshim = '';
  let boot = '';
  let misc = '';
  let bfb = '';
  let bfbBytes = 0;
  let cfg = '';
  let daemon: StandInDaemon;
  const children: ChildProcess[] = [];

  const startReader = (out: string, options: { rate?: number; stopAfter?: number } = {}): ChildProcess => {
    const child = spawn(
      process.execPath,
      ['-e', READER, boot, out, String(options.rate ?? 0), String(options.stopAfter ?? 0)],
      { stdio: ['ignore', 'ignore', 'inherit'] },
    );
    children.push(child);
    return child;
  };

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'bma-rshim-'));
    rshim = path.join(dir, 'dev', 'rshim0');
    await mkdir(rshim, { recursive: true });
    boot = path.join(rshim, 'boot');
    misc = path.join(rshim, 'misc');
    execFileSync('mkfifo', [boot]);
    bfb = path.join(dir, 'bf-bundle.bfb');
    bfbBytes = await writeLargeBfb(bfb, 6 * 1024 * 1024 + 5);
    cfg = path.join(dir, 'bf.cfg');
    await writeFile(
      cfg,
      await mergeBfCfg({
        conductorCfg: "ubuntu_PASSWORD='$1$x$y'\nWITH_NIC_FW_UPDATE=yes\n",
        agentPublicKey: KEY,
      }),
    );
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  afterEach(async () => {
    await daemon?.stop();
    for (const child of children.splice(0)) {
      child.kill('SIGKILL');
      await exited(child);
    }
  });

  const startDaemon = async (): Promise<StandInDaemon> => {
    daemon = new StandInDaemon(misc);
    await daemon.start();
    return daemon;
  };

  it('preflight, baseline, a byte-identical push with progress, then the log followed to ready', async () => {
    await startDaemon();
    daemon.append(...PREVIOUS_INSTALL);
    await daemon.flush();
    const out = path.join(dir, 'received-1');
    // About 1 s of pushing at 8 MiB/s, so progress is seen several times.
    const reader = startReader(out, { rate: 8 * 1024 * 1024 });

    const { bootPath, miscPath, misc: before } = await preflightRshim(rshim, DEFAULT_PATHS);
    assert.equal(before.bootTimeoutS, 300);
    const summary = await validateBfbFile(bfb);
    assert.equal(summary.bytes, bfbBytes);
    const baseline = await captureLogBaseline(miscPath, { settleMs: 500, pollMs: 20 });
    assert.equal(baseline.displayLevelApplied, true);
    assert.deepEqual(baseline.lines, PREVIOUS_INSTALL);

    const progress: PushProgress[] = [];
    const total = bfbBytes + (await stat(cfg)).size;
    const result = await pushBootStream({
      bootPath,
      bfbPath: bfb,
      cfgPath: cfg,
      paths: DEFAULT_PATHS,
      bootTimeoutS: before.bootTimeoutS,
      onProgress: (p) => progress.push(p),
    });
    assert.equal(result.bytes, total);
    assert.equal(await exited(reader), 0);
    const expected = createHash('sha256')
      .update(await readFile(bfb))
      .update(await readFile(cfg))
      .digest('hex');
    assert.equal(await sha256File(out), expected, 'the reader got the BFB and the bf.cfg, byte for byte');
    assert.ok(progress.length >= 2, `progress was reported (${progress.length} times)`);
    assert.ok(progress.some((p) => p.bytes > 0 && p.bytes < total && p.rateBytesPerS > 0));
    for (let i = 1; i < progress.length; i += 1)
      assert.ok((progress[i]?.bytes ?? 0) >= (progress[i - 1]?.bytes ?? 0));
    assert.ok(progress.every((p) => p.total === total && p.bytes <= total));

    // The DPU boots the stream: the old lines stay in the ring, new ones follow them.
    const fresh = [
      ...BF3_LOG,
      ' INFO[MISC]: Installation finished. Rebooting BMC..',
      ' INFO[MISC]: Linux up',
    ];
    const seen: RshimLogLine[] = [];
    const feeding = (async () => {
      for (const line of fresh) {
        await sleep(5);
        daemon.append(line);
      }
    })();
    const done = await followInstall({
      miscPath,
      baseline,
      pollIntervalMs: 40,
      timeoutMs: 10_000,
      onLine: (line) => seen.push(line),
    });
    await feeding;
    assert.equal(done.marker, 'Linux up');
    assert.equal(done.line, 'INFO[MISC]: Linux up');
    assert.deepEqual(
      seen.map((line) => line.raw),
      fresh,
      'exactly the new lines, in order; the previous install never counted',
    );
    assert.deepEqual(done.logTail, fresh.slice(-40));
    assert.ok(daemon.commands.includes('DISPLAY_LEVEL 2'));
    assert.ok(!daemon.commands.some((command) => command.startsWith('CLEAR_ON_READ')), 'never CLEAR_ON_READ');
  });

  it('a stalled reader ends the push with RSHIM_TIMEOUT and leaves no writer behind', async () => {
    await startDaemon();
    daemon.set('BOOT_TIMEOUT', '1');
    await daemon.flush();
    startReader(path.join(dir, 'received-stall'), { stopAfter: 512 * 1024 });
    const { bootPath, misc: state } = await preflightRshim(rshim, DEFAULT_PATHS);
    assert.equal(state.bootTimeoutS, 1);
    const started = Date.now();
    const error = await rejectsWithCode(
      pushBootStream({
        bootPath,
        bfbPath: bfb,
        cfgPath: cfg,
        paths: DEFAULT_PATHS,
        bootTimeoutS: state.bootTimeoutS,
        stallMarginMs: 300,
        pollIntervalMs: 100,
        killGraceMs: 500,
      }),
      'RSHIM_TIMEOUT',
      /took no bytes .* for [\d.]+ s \(BOOT_TIMEOUT 1 s plus 0\.3 s\); stopped after \d+ of \d+ bytes/,
    );
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 1300 && elapsed < 5000, `stopped after ${elapsed} ms`);
    assert.ok((error.details.bytes as number) >= 512 * 1024 && (error.details.bytes as number) < bfbBytes);
    assert.deepEqual(await findBootHolders(boot, DEFAULT_PATHS), [], 'cat and its shell are gone');
  });

  it('a reader that goes away after a stall (EPIPE) is RSHIM_TIMEOUT too', async () => {
    const reader = startReader(path.join(dir, 'received-epipe'), { stopAfter: 256 * 1024 });
    // Gone 1.5 s after it stopped reading: past half the 2 s boot timeout, well before our own stop.
    let gone: NodeJS.Timeout | undefined;
    await rejectsWithCode(
      pushBootStream({
        bootPath: boot,
        bfbPath: bfb,
        paths: DEFAULT_PATHS,
        bootTimeoutS: 2,
        pollIntervalMs: 100,
        onProgress: ({ bytes }) => {
          if (gone === undefined && bytes >= 256 * 1024)
            gone = setTimeout(() => reader.kill('SIGKILL'), 1500);
        },
      }),
      'RSHIM_TIMEOUT',
      /stopped taking the boot stream after \d+ of \d+ bytes: SIGPIPE/,
    );
  });

  it('another writer on boot is RSHIM_BUSY before any byte is sent', async () => {
    await startDaemon();
    const out = path.join(dir, 'received-busy');
    const reader = startReader(out);
    const holder = spawn('sh', ['-c', 'exec sleep 30 > "$1"', 'sh', boot], { stdio: 'ignore' });
    children.push(holder);
    for (
      let i = 0;
      i < 200 && !(await findBootHolders(boot, DEFAULT_PATHS)).some((h) => h.comm === 'sleep');
      i += 1
    )
      await sleep(10);
    const error = await rejectsWithCode(
      preflightRshim(rshim, DEFAULT_PATHS),
      'RSHIM_BUSY',
      /sleep \(pid \d+\)/,
    );
    assert.equal(error.details.pid, holder.pid);
    assert.equal(error.details.comm, 'sleep');
    holder.kill('SIGKILL');
    assert.equal(await exited(reader), 0);
    assert.equal((await stat(out)).size, 0);
  });

  it('an abort stops the push with CANCELLED', async () => {
    await startDaemon();
    startReader(path.join(dir, 'received-abort'), { stopAfter: 256 * 1024 });
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 300);
    await rejectsWithCode(
      pushBootStream({
        bootPath: boot,
        bfbPath: bfb,
        cfgPath: cfg,
        paths: DEFAULT_PATHS,
        signal: controller.signal,
        killGraceMs: 500,
      }),
      'CANCELLED',
    );
    assert.deepEqual(await findBootHolders(boot, DEFAULT_PATHS), []);
  });

  it('a missing boot device is RSHIM_NOT_FOUND', async () => {
    await rejectsWithCode(
      pushBootStream({
        bootPath: path.join(dir, 'dev', 'rshim9', 'boot'),
        bfbPath: bfb,
        paths: DEFAULT_PATHS,
      }),
      'RSHIM_NOT_FOUND',
      /ENOENT/,
    );
  });

  it('follows a reset ring to a CRITICAL ERROR and quotes it', async () => {
    await startDaemon();
    daemon.append(...PREVIOUS_INSTALL);
    await daemon.flush();
    const baseline = await captureLogBaseline(misc, { settleMs: 500, pollMs: 20 });
    daemon.resetLog();
    await daemon.flush();
    const failing = ' INFO[MISC]: CRITICAL ERROR: Failed to access target device: /dev/mmcblk0';
    setTimeout(() => daemon.append(...BF3_LOG.slice(0, 12), failing, ' INFO[MISC]: Rebooting...'), 100);
    const error = await rejectsWithCode(
      followInstall({ miscPath: misc, baseline, pollIntervalMs: 40, timeoutMs: 10_000 }),
      'BFB_INSTALL_FAILED',
      /"INFO\[MISC\]: CRITICAL ERROR: Failed to access target device: \/dev\/mmcblk0"/,
    );
    const tail = error.details.log_tail as string[];
    assert.deepEqual(tail.slice(0, 2), BF3_LOG.slice(0, 2));
    assert.ok(tail.includes(failing));
  });

  it('follows a full ring whose oldest lines drop out, to Rebooting...', async () => {
    await startDaemon();
    daemon.ringLines = 12;
    daemon.append(...PREVIOUS_INSTALL);
    await daemon.flush();
    const baseline = await captureLogBaseline(misc, { settleMs: 500, pollMs: 20 });
    assert.deepEqual(baseline.lines, PREVIOUS_INSTALL.slice(-12));
    const fresh = [...BF3_LOG, ' INFO[MISC]: Installation finished. Rebooting...'];
    const seen: string[] = [];
    const feeding = (async () => {
      // A few lines per poll, then almost a whole ring at once: both still line up. Each batch
      // waits until the previous one was seen, as a ring this small would otherwise overflow.
      for (let i = 0; i < 21; i += 3) {
        daemon.append(...fresh.slice(i, i + 3));
        for (let wait = 0; wait < 400 && seen.length < i + 3; wait += 1) await sleep(5);
      }
      daemon.append(...fresh.slice(21));
    })();
    const done = await followInstall({
      miscPath: misc,
      baseline,
      pollIntervalMs: 40,
      timeoutMs: 10_000,
      onLine: (line) => seen.push(line.raw),
    });
    await feeding;
    assert.equal(done.marker, 'Rebooting...');
    // The burst of 11 lines fits the 12-line ring, so nothing was lost.
    assert.deepEqual(seen, fresh);
  });

  it('gives up with BFB_INSTALL_TIMEOUT, and restores DISPLAY_LEVEL 2 when another tool lowers it', async () => {
    await startDaemon();
    const baseline = await captureLogBaseline(misc, { settleMs: 500, pollMs: 20 });
    assert.deepEqual(baseline.lines, []);
    setTimeout(() => daemon.append(...BF3_LOG.slice(0, 5)), 100);
    setTimeout(() => daemon.set('DISPLAY_LEVEL', '0'), 250);
    setTimeout(() => daemon.append(...BF3_LOG.slice(5, 8)), 400);
    const seen: string[] = [];
    const error = await rejectsWithCode(
      followInstall({
        miscPath: misc,
        baseline,
        pollIntervalMs: 30,
        timeoutMs: 900,
        onLine: (line) => seen.push(line.raw),
      }),
      'BFB_INSTALL_TIMEOUT',
      /neither ready nor a failure within 0\.9 s; its last line: "INFO\[BL31\]: lifecycle GA Secured"/,
    );
    assert.deepEqual(seen, BF3_LOG.slice(0, 8));
    assert.deepEqual(error.details.log_tail, BF3_LOG.slice(0, 8));
    assert.equal(daemon.commands.filter((command) => command === 'DISPLAY_LEVEL 2').length, 2);
  });

  it('an abort stops following with CANCELLED', async () => {
    await startDaemon();
    const baseline = await captureLogBaseline(misc, { settleMs: 500, pollMs: 20 });
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 150);
    await rejectsWithCode(
      followInstall({ miscPath: misc, baseline, pollIntervalMs: 1000, signal: controller.signal }),
      'CANCELLED',
    );
  });

  describe('how cat failures are read', () => {
    let bin = '';
    let target = '';
    before(async () => {
      bin = path.join(dir, 'bin');
      await mkdir(bin);
      target = path.join(dir, 'plain-boot');
      await writeFile(target, '');
    });

    const withCat = async (script: string): Promise<Record<string, string>> => {
      await writeFile(path.join(bin, 'cat'), `#!/bin/sh\n${script}\n`);
      await chmod(path.join(bin, 'cat'), 0o755);
      return { PATH: `${bin}:${process.env.PATH ?? ''}` };
    };

    it("the device's ETIMEDOUT is RSHIM_TIMEOUT", async () => {
      const env = await withCat('echo "cat: write error: Connection timed out" >&2; exit 1');
      await rejectsWithCode(
        pushBootStream({ bootPath: target, bfbPath: bfb, paths: DEFAULT_PATHS, env }),
        'RSHIM_TIMEOUT',
        /stopped taking the boot stream after 0 of \d+ bytes: cat: write error: Connection timed out/,
      );
    });

    it('a short write is never success', async () => {
      const env = await withCat('shift; head -c 1000 "$1"');
      const error = await rejectsWithCode(
        pushBootStream({ bootPath: target, bfbPath: bfb, cfgPath: cfg, paths: DEFAULT_PATHS, env }),
        'TOOL_FAILED',
        /wrote 1000 bytes into .* where \d+ were expected/,
      );
      assert.equal(error.details.bytes, 1000);
    });

    it('an EPIPE without a stall is a plain failure, with the run in details', async () => {
      const env = await withCat('echo "cat: write error: Broken pipe" >&2; exit 1');
      const error = await rejectsWithCode(
        pushBootStream({ bootPath: target, bfbPath: bfb, paths: DEFAULT_PATHS, env }),
        'TOOL_FAILED',
        /^cat .*bf-bundle\.bfb exited with code 1: cat: write error: Broken pipe$/,
      );
      assert.deepEqual(error.details.argv, ['cat', bfb]);
      assert.equal(error.details.exitCode, 1);
      assert.equal(error.details.stderrTail, 'cat: write error: Broken pipe');
    });

    it('an EIO after a stall is RSHIM_TIMEOUT', async () => {
      const env = await withCat('sleep 0.6; echo "cat: write error: Input/output error" >&2; exit 1');
      await rejectsWithCode(
        pushBootStream({
          bootPath: target,
          bfbPath: bfb,
          paths: DEFAULT_PATHS,
          env,
          stallEvidenceMs: 400,
          pollIntervalMs: 50,
        }),
        'RSHIM_TIMEOUT',
        /Input\/output error/,
      );
    });
  });
});
