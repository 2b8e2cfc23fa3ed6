/**
 * The status screen on real terminals: a pseudo-terminal made by python3's pty module (the test
 * reads its master side and replays the bytes on a small terminal emulator, so it checks what a
 * person at the console would see), first with the screen in process, then drawn by the real agent
 * process while the reference conductor runs BlueField commands on the simulated host.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, constants, openSync, readSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import type { ChannelStatus } from '../../agent/channel/agent-channel.js';
import { StatusModel } from '../../agent/console/status-model.js';
import { StatusScreen, type StatusScreenOptions } from '../../agent/console/status-screen.js';
import { sampleBfb } from '../support/bfb-builder.js';
import { createBlueFieldLab, type BlueFieldLab } from '../support/bluefield-sim/lab.js';
import { createCardState, installFakeMlxTools } from '../support/bluefield-sim/nv-state.js';
import { ReferenceConductor } from '../support/conductor.js';
import { FaultyHttpServer } from '../support/faulty-http-server.js';
import { haveTools } from '../support/loop-lab.js';
import { spawnAgent, type SpawnedAgent } from '../support/spawn-agent.js';

const ptySkip = (await haveTools('python3', 'stty', 'mkfifo')) ?? false;
if (ptySkip) process.stderr.write(`# skipping status screen tests: ${ptySkip}\n`);
const labSkip =
  ptySkip ||
  (process.getuid?.() !== 0 ? 'needs root (the simulated BlueField host)' : null) ||
  (await haveTools('mknod', 'unshare', 'bash', 'dd', 'cat', 'sha256sum', 'ssh-keygen')) ||
  false;
if (labSkip && !ptySkip)
  process.stderr.write(`# skipping the agent process status screen test: ${labSkip}\n`);

const ESC = '\x1b';

/**
 * A terminal emulator for what the status screen sends (CUP, EL, ED, cursor visibility, CR, LF):
 * the screen a person would see, and whether anything scrolled off it.
 */
class VirtualTerminal {
  private grid: string[][] = [];
  private row = 0;
  private col = 0;
  private pending = '';
  scrolls = 0;
  cursorVisible = true;

  constructor(
    private cols: number,
    private rows: number,
  ) {
    this.resize(cols, rows);
  }

  resize(cols: number, rows: number): void {
    this.cols = cols;
    this.rows = rows;
    this.grid = Array.from({ length: rows }, () => Array<string>(cols).fill(' '));
    this.row = Math.min(this.row, rows - 1);
    this.col = Math.min(this.col, cols - 1);
  }

  feed(chunk: string): void {
    const data = this.pending + chunk;
    this.pending = '';
    let index = 0;
    while (index < data.length) {
      const char = data[index] ?? '';
      if (char === ESC) {
        // eslint-disable-next-line no-control-regex -- a terminal's input is control sequences
        const match = /^\x1b\[(\??)([\d;]*)([A-Za-z])/.exec(data.slice(index, index + 32));
        if (!match) {
          if (data.length - index < 32) {
            this.pending = data.slice(index);
            return;
          }
          throw new Error(`unexpected escape sequence ${JSON.stringify(data.slice(index, index + 10))}`);
        }
        this.csi(match[1] ?? '', match[2] ?? '', match[3] ?? '');
        index += match[0].length;
        continue;
      }
      if (char === '\r') this.col = 0;
      else if (char === '\n') this.lineFeed();
      else if (char >= ' ') this.put(char);
      index += 1;
    }
  }

  lines(): string[] {
    return this.grid.map((row) => row.join('').trimEnd());
  }

  text(): string {
    return this.lines().join('\n');
  }

  private put(char: string): void {
    if (this.col >= this.cols) {
      this.col = 0;
      this.lineFeed();
    }
    const row = this.grid[this.row];
    if (row) row[this.col] = char;
    this.col += 1;
  }

  private lineFeed(): void {
    if (this.row < this.rows - 1) {
      this.row += 1;
      return;
    }
    this.grid.shift();
    this.grid.push(Array<string>(this.cols).fill(' '));
    this.scrolls += 1;
  }

  private clear(fromRow: number, fromCol: number, toRow: number): void {
    for (let row = fromRow; row <= toRow; row += 1) {
      const cells = this.grid[row];
      if (!cells) continue;
      for (let col = row === fromRow ? fromCol : 0; col < this.cols; col += 1) cells[col] = ' ';
    }
  }

  private csi(privateMarker: string, params: string, final: string): void {
    const numbers = params === '' ? [] : params.split(';').map(Number);
    if (privateMarker === '?') {
      if (params === '25') this.cursorVisible = final === 'h';
      return;
    }
    switch (final) {
      case 'H':
      case 'f':
        this.row = Math.min(this.rows - 1, Math.max(0, (numbers[0] ?? 1) - 1));
        this.col = Math.min(this.cols - 1, Math.max(0, (numbers[1] ?? 1) - 1));
        return;
      case 'K':
        this.clear(this.row, this.col, this.row);
        return;
      case 'J':
        if (numbers[0] === 2) this.clear(0, 0, this.rows - 1);
        else this.clear(this.row, this.col, this.rows - 1);
        return;
      default:
        throw new Error(`unexpected control sequence ${params}${final}`);
    }
  }
}

const PTY_HELPER = `
import os, pty, sys, fcntl, termios, struct, select
m, s = pty.openpty()
def size(cols, rows):
    fcntl.ioctl(m, termios.TIOCSWINSZ, struct.pack('HHHH', rows, cols, 0, 0))
size(int(sys.argv[1]), int(sys.argv[2]))
out = sys.stdout.buffer
out.write((os.ttyname(s) + '\\n').encode())
out.flush()
paused = False
commands = b''
while True:
    ready, _, _ = select.select([0] + ([] if paused else [m]), [], [])
    if m in ready:
        try:
            data = os.read(m, 65536)
        except OSError:
            break
        if not data:
            break
        out.write(data)
        out.flush()
    if 0 in ready:
        chunk = os.read(0, 1024)
        if not chunk:
            break
        commands += chunk
        while b'\\n' in commands:
            line, commands = commands.split(b'\\n', 1)
            words = line.decode().split()
            if words[0] == 'size':
                size(int(words[1]), int(words[2]))
            elif words[0] == 'pause':
                paused = True
            elif words[0] == 'resume':
                paused = False
            elif words[0] == 'quit':
                sys.exit(0)
`;

/** A pseudo-terminal: the slave's path for the screen, the master read into a VirtualTerminal. */
class Pty {
  output = '';
  readonly vt: VirtualTerminal;
  private constructor(
    private readonly child: ChildProcess,
    readonly path: string,
    cols: number,
    rows: number,
  ) {
    this.vt = new VirtualTerminal(cols, rows);
  }

  static async open(cols: number, rows: number): Promise<Pty> {
    const child = spawn('python3', ['-c', PTY_HELPER, String(cols), String(rows)], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    let head = '';
    let pty: Pty | null = null;
    return new Promise((resolve, reject) => {
      child.once('error', reject);
      child.stdout?.setEncoding('latin1').on('data', (chunk: string) => {
        if (pty) {
          pty.output += chunk;
          pty.vt.feed(chunk);
          return;
        }
        head += chunk;
        const newline = head.indexOf('\n');
        if (newline < 0) return;
        pty = new Pty(child, head.slice(0, newline), cols, rows);
        const rest = head.slice(newline + 1);
        pty.output += rest;
        pty.vt.feed(rest);
        resolve(pty);
      });
    });
  }

  send(command: string): void {
    this.child.stdin?.write(`${command}\n`);
  }

  resize(cols: number, rows: number): void {
    this.vt.resize(cols, rows);
    this.send(`size ${cols} ${rows}`);
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.send('quit');
    await exited;
  }
}

const waitUntil = async (what: string, check: () => boolean, timeoutMs = 10_000, detail?: () => string) => {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}${detail ? `:\n${detail()}` : ''}`);
    await sleep(20);
  }
};

const status = (overrides: Partial<ChannelStatus>): ChannelStatus => ({
  state: 'connecting',
  nodeUuid: null,
  connectedSince: null,
  lastError: null,
  lastDisconnect: null,
  reconnects: 0,
  attempts: 0,
  retryAt: null,
  ...overrides,
});

const capturingLogger = () => {
  const records: Array<Record<string, unknown>> = [];
  const logger = pino(
    { level: 'debug', base: undefined },
    { write: (line: string) => void records.push(JSON.parse(line) as Record<string, unknown>) },
  );
  return { logger, records };
};

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
});

describe('status screen on a terminal', { skip: ptySkip }, () => {
  const screenOn = async (
    pty: Pty,
    model: StatusModel,
    options: Partial<StatusScreenOptions> = {},
  ): Promise<StatusScreen> => {
    const screen = await StatusScreen.open({
      devices: [pty.path],
      forcePlain: false,
      term: 'xterm',
      model,
      logger: pino({ level: 'silent' }),
      ...options,
    });
    cleanups.push(() => screen.stop());
    return screen;
  };

  const newModel = (): StatusModel => {
    const model = new StatusModel({
      agentVersion: 'test',
      conductorUrl: 'ws://127.0.0.1:9/v1/agent',
      bootif: null,
    });
    model.setIdentity({
      hostname: 'node-1',
      vendor: 'QEMU',
      product: 'Standard PC',
      serial: 'S-1',
      addresses: [],
    });
    return model;
  };

  it('redraws in place: a whole first frame, then only the rows that changed, never scrolling', async () => {
    const pty = await Pty.open(100, 30);
    cleanups.push(() => pty.close());
    const model = newModel();
    const screen = await screenOn(pty, model, { tickMs: 60_000, fullRedrawMs: 60_000 });
    await waitUntil('the first frame', () => pty.vt.text().includes('Conductor  connecting'));
    assert.ok(pty.output.startsWith(`${ESC}[2J${ESC}[?25l${ESC}[H`), JSON.stringify(pty.output.slice(0, 20)));
    assert.equal(pty.vt.cursorVisible, false);
    assert.match(
      pty.vt.lines()[0] ?? '',
      /^bm-agent test {2}node-1 +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC {2}up \ds$/,
    );
    assert.equal(pty.vt.lines()[1], 'System     QEMU Standard PC, serial S-1');

    const before = pty.output.length;
    model.linkChanged(status({ state: 'ready', connectedSince: new Date().toISOString(), nodeUuid: 'n-1' }));
    await waitUntil('connected', () => pty.vt.text().includes('Conductor  connected since'));
    const update = pty.output.slice(before);
    // Row 5 is the link; the rows around it are left alone.
    assert.ok(update.includes(`${ESC}[5;1HConductor  connected since`), JSON.stringify(update));
    for (const absent of ['System', `${ESC}[2J`, `${ESC}[H`]) assert.ok(!update.includes(absent), absent);

    // A storm of changes still makes at most about two frames a second.
    const framesBefore = screen.stats()[0]?.frames ?? 0;
    const started = Date.now();
    for (let index = 0; index < 150; index += 1) {
      model.logRecord({ level: 'warn', time: new Date().toISOString(), msg: `storm ${index}` });
      await sleep(10);
    }
    await sleep(600);
    const seconds = (Date.now() - started) / 1000;
    const frames = (screen.stats()[0]?.frames ?? 0) - framesBefore;
    assert.ok(frames >= 2 && frames <= Math.ceil(seconds * 2) + 1, `${frames} frames in ${seconds} s`);
    assert.ok(pty.vt.text().includes('storm 149'), pty.vt.text());
    assert.equal(pty.vt.scrolls, 0);
    for (const line of pty.vt.lines()) assert.ok(line.length <= 99, line);
  });

  it('redraws whole every few seconds and when the terminal is resized', async () => {
    const pty = await Pty.open(100, 30);
    cleanups.push(() => pty.close());
    const model = newModel();
    await screenOn(pty, model, { tickMs: 60_000, fullRedrawMs: 300, sizeProbeMs: 100 });
    const whole = `${ESC}[?25l${ESC}[H`;
    const count = (): number => pty.output.split(whole).length - 1;
    await waitUntil('three whole frames', () => count() >= 3, 3000);

    model.linkChanged(status({ state: 'ready', connectedSince: new Date().toISOString(), nodeUuid: 'n-1' }));
    const before = pty.output.length;
    pty.resize(60, 20);
    await waitUntil(
      'a frame at the new width',
      () =>
        pty.output.slice(before).includes(whole) &&
        pty.vt.lines()[0]?.startsWith('bm-agent test  node-1') === true,
      3000,
    );
    await sleep(400);
    for (const line of pty.vt.lines()) assert.ok(line.length <= 59, line);
    assert.match(pty.vt.text(), /Conductor {2}connected since \d\d:\d\d:\d\d, node n-1/);
    assert.equal(pty.vt.scrolls, 0);
  });

  it('writes plain lines on a terminal when told to, or when TERM says it cannot be drawn on', async () => {
    for (const options of [{ forcePlain: true }, { term: undefined }, { term: 'dumb' }]) {
      const pty = await Pty.open(80, 24);
      cleanups.push(() => pty.close());
      const model = newModel();
      const screen = await screenOn(pty, model, options);
      await waitUntil('the plain lines', () => pty.output.includes('conductor ws://'));
      model.logRecord({ level: 'warn', time: new Date().toISOString(), msg: 'odd' });
      await waitUntil('the warning', () => pty.output.includes('WARN odd'));
      assert.ok(!pty.output.includes(ESC), JSON.stringify(options));
      assert.match(
        pty.output,
        /^\[bm-agent \d\d:\d\d:\d\d\] bm-agent test on node-1: QEMU Standard PC, serial S-1\r+\n/,
      );
      assert.deepEqual(screen.stats()[0]?.mode, 'plain');
    }
  });

  it('drops frames while the terminal does not take them, then shows the latest state', async () => {
    const pty = await Pty.open(100, 30);
    cleanups.push(() => pty.close());
    const model = newModel();
    const screen = await screenOn(pty, model, { minIntervalMs: 5, tickMs: 60_000, fullRedrawMs: 50 });
    await waitUntil('the first frame', () => pty.vt.text().includes('Conductor'));
    pty.send('pause');
    await sleep(100);
    const written = screen.stats()[0]?.bytes ?? 0;
    for (let index = 0; index < 400 && (screen.stats()[0]?.dropped ?? 0) < 20; index += 1) {
      model.logRecord({
        level: 'warn',
        time: new Date().toISOString(),
        msg: `stuck ${index} ${'y'.repeat(60)}`,
      });
      await sleep(5);
    }
    await waitUntil('dropped frames', () => (screen.stats()[0]?.dropped ?? 0) >= 20);
    const stuck = screen.stats()[0];
    // What went out while nobody read is what the terminal's buffer holds, not a growing queue.
    assert.ok((stuck?.bytes ?? 0) - written < 128 * 1024, `${(stuck?.bytes ?? 0) - written} bytes`);
    assert.equal(stuck?.failed, null);
    pty.send('resume');
    model.logRecord({ level: 'error', time: new Date().toISOString(), msg: 'after the stall' });
    await waitUntil(
      'the latest state',
      () => pty.vt.text().includes('after the stall'),
      5000,
      () => pty.vt.text(),
    );
    await sleep(200);
    assert.match(pty.vt.lines()[0] ?? '', /^bm-agent test {2}node-1/);
    assert.equal(pty.vt.scrolls, 0);
  });

  it('closes a terminal that went away and says so once', async () => {
    const pty = await Pty.open(80, 24);
    const { logger, records } = capturingLogger();
    const model = newModel();
    const screen = await screenOn(pty, model, { logger, minIntervalMs: 20 });
    await waitUntil('the first frame', () => pty.vt.text().includes('Conductor'));
    await pty.close();
    for (let index = 0; index < 10; index += 1) {
      model.logRecord({ level: 'warn', time: new Date().toISOString(), msg: `gone ${index}` });
      await sleep(30);
    }
    await waitUntil('the failure', () => screen.stats()[0]?.failed !== null);
    assert.match(screen.stats()[0]?.failed ?? '', /EIO/);
    assert.equal(screen.active, false);
    assert.equal(
      records.filter((record) => record.msg === 'status console failed; no longer drawn on').length,
      1,
    );
  });
});

describe('the agent process shows its status on the console', { skip: labSkip }, () => {
  const VERSION = 'bf-bundle-3.0.0-42_25.07_ubuntu-24.04_prod';
  const BFB = sampleBfb(VERSION, 512 * 1024);
  const SLOTS = ['0000:03:00', '0000:23:00'];
  let lab: BlueFieldLab;
  let server: FaultyHttpServer;
  let conductor: ReferenceConductor;
  let agent: SpawnedAgent;
  let pty: Pty;
  let fifo: string;
  let fifoReader: number;
  let plain = '';
  let dir: string;
  const readPlain = (): string => {
    const buffer = Buffer.alloc(65536);
    for (;;) {
      try {
        const read = readSync(fifoReader, buffer);
        if (read <= 0) break;
        plain += buffer.subarray(0, read).toString();
      } catch {
        break;
      }
    }
    return plain;
  };

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'bma-status-agent-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    lab = await createBlueFieldLab({
      cards: [
        { generation: 'BF2', slot: SLOTS[0], rshimIndex: 0, mode: 'nic' },
        { generation: 'BF3', slot: SLOTS[1], rshimIndex: 1, mode: 'nic' },
      ],
      installTools: async (binDir, stateDir) => {
        await installFakeMlxTools(binDir, { flavour: 'mft', stateDir, side: 'host' });
        await createCardState(stateDir, { slot: SLOTS[0] ?? '', generation: 'BF2', mode: 'nic' });
        await createCardState(stateDir, { slot: SLOTS[1] ?? '', generation: 'BF3', mode: 'nic' });
      },
    });
    cleanups.push(() => lab.close());
    const dmi = path.join(lab.paths.sys, 'class', 'dmi', 'id');
    await mkdir(dmi, { recursive: true });
    await writeFile(path.join(dmi, 'sys_vendor'), 'Supermicro\n');
    await writeFile(path.join(dmi, 'product_name'), 'SYS-1029U-TN10RT\n');
    await writeFile(path.join(dmi, 'product_serial'), 'S21A2B3C\n');
    // Slow enough that the download's progress bar is on screen for a few redraws.
    server = await FaultyHttpServer.start({
      data: BFB,
      chunkBytes: 16 * 1024,
      faults: () => ({ kind: 'slow', bytesPerSecond: 192 * 1024 }),
    });
    cleanups.push(() => server.stop());
    conductor = await ReferenceConductor.start({ heartbeatIntervalS: 1 });
    cleanups.push(() => conductor.stop());
    pty = await Pty.open(110, 32);
    cleanups.push(() => pty.close());
    fifo = path.join(dir, 'serial');
    await new Promise<void>((resolve, reject) =>
      spawn('mkfifo', [fifo]).once('exit', (code) => (code === 0 ? resolve() : reject(new Error('mkfifo')))),
    );
    fifoReader = openSync(fifo, constants.O_RDWR | constants.O_NONBLOCK);
    cleanups.push(async () => closeSync(fifoReader));
    const stateDir = path.join(dir, 'state');
    const stagingDir = path.join(dir, 'staging');
    await mkdir(stateDir);
    await mkdir(stagingDir);
    agent = await spawnAgent(['run'], {
      cmdline: `BOOTIF=01-52-54-00-aa-bb-cc bma-status-console=${pty.path},${path.join(dir, 'no-such-tty')},${fifo}`,
      env: {
        TERM: 'xterm',
        PATH: `${lab.binDir}:${process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}`,
        BMA_SYS: lab.paths.sys,
        BMA_DEV: lab.paths.dev,
        BMA_RUN: lab.paths.run,
        BMA_STATE_DIR: stateDir,
        BMA_STAGING_DIR: stagingDir,
      },
      args: ['--conductor-url', conductor.url, '--insecure', '--backoff-min', '0.05', '--backoff-max', '0.2'],
    });
    cleanups.push(() => agent.stop());
  });

  it('shows the node, the link, a command with its progress bar and each BlueField', async () => {
    const screen = (): string => pty.vt.text();
    await conductor.waitForConnection(20_000);
    await waitUntil(
      'connected on the screen',
      () => /Conductor {2}connected since/.test(screen()),
      10_000,
      screen,
    );
    assert.match(screen(), /System {5}Supermicro SYS-1029U-TN10RT, serial S21A2B3C/);
    assert.match(screen(), /BOOTIF {5}52:54:00:aa:bb:cc/);

    await conductor.runCommand('bluefield.list', {}, 'list-1');
    assert.equal((await conductor.waitForResult('list-1', 30_000)).status, 'SUCCEEDED');
    await waitUntil('the cards', () => screen().includes('BlueField  0000:03:00 BF2 mode nic'), 5000, screen);
    assert.ok(screen().includes('           0000:23:00 BF3 mode nic'), screen());

    const checksum = `sha256:${createHash('sha256').update(BFB).digest('hex')}`;
    await conductor.runCommand(
      'bluefield.install_bfb',
      { url: server.url('/dpu.bfb'), checksum, force: true },
      'bfb-1',
    );
    await waitUntil(
      'a progress bar',
      () =>
        /Command {4}bluefield\.install_bfb \(bfb-1\) running \ds\n {13}bfb download +\[#+\.+\] +\d+% /.test(
          screen(),
        ),
      15_000,
      screen,
    );
    const record = await conductor.waitForResult('bfb-1', 90_000);
    assert.equal(record.status, 'SUCCEEDED', JSON.stringify(record.error));
    await waitUntil(
      'the outcome',
      () => screen().includes('Last       bluefield.install_bfb (bfb-1) SUCCEEDED'),
      5000,
      screen,
    );
    assert.match(
      screen(),
      /BlueField {2}0000:03:00 BF2 mode nic installed \((DPU is ready|Linux up)\) bf-bundle-3\.0\.0-42/,
    );
    assert.match(
      screen(),
      / {11}0000:23:00 BF3 mode nic installed \(In Enhanced NIC mode\) bf-bundle-3\.0\.0-42/,
    );
    assert.match(screen(), /Command {4}idle/);
    assert.equal(pty.vt.scrolls, 0, 'redrawn in place, nothing scrolled');
    for (const line of pty.vt.lines()) assert.ok(line.length <= 109, line);
  });

  it('appends plain lines on a console that is not a terminal, and skips a device that is missing', async () => {
    await waitUntil(
      'the plain lines',
      () => readPlain().includes('finished bluefield.install_bfb'),
      5000,
      () => plain,
    );
    const lines = plain.split('\n').filter(Boolean);
    for (const line of lines) assert.match(line, /^\[bm-agent \d\d:\d\d:\d\d\] /);
    const body = lines.map((line) => line.slice('[bm-agent 00:00:00] '.length));
    assert.ok(
      body.some((line) => /^bm-agent \S+ on .+: Supermicro SYS-1029U-TN10RT, serial S21A2B3C$/.test(line)),
      body.join('\n'),
    );
    assert.ok(
      body.some((line) => /^conductor ws:\/\/127\.0\.0\.1:\d+\/v1\/agent: connected since/.test(line)),
      body.join('\n'),
    );
    assert.ok(
      body.some((line) =>
        /^command bluefield\.install_bfb \(bfb-1\): bfb download \d+% of \d+ KiB$/.test(line),
      ),
      body.join('\n'),
    );
    assert.ok(
      body.some((line) => /^BlueField 0000:23:00 BF3 mode nic installed \(In Enhanced NIC mode\)/.test(line)),
      body.join('\n'),
    );
    assert.ok(body.some((line) => /^finished bluefield\.install_bfb \(bfb-1\) SUCCEEDED/.test(line)));
    assert.ok(!plain.includes(ESC));
    // One line per change: no line is the same as the one before it under the same subject.
    const downloads = body.filter((line) => line.includes('bfb download'));
    assert.equal(new Set(downloads).size, downloads.length, downloads.join('\n'));

    const skipped = agent.logs.filter((record) => record.msg === 'status console cannot be opened; skipped');
    assert.deepEqual(
      skipped.map((record) => record.device),
      [path.join(dir, 'no-such-tty')],
    );
    const modes = agent.logs
      .filter((record) => typeof record.mode === 'string' && record.device !== undefined)
      .map((record) => [record.device, record.mode]);
    assert.deepEqual(
      modes.sort(),
      [
        [fifo, 'plain'],
        [pty.path, 'ansi'],
      ].sort(),
    );
  });

  it('leaves the console showing that the agent stopped, with the cursor back', async () => {
    await agent.stop();
    assert.match(pty.vt.text(), /Conductor {2}stopped \(the agent is shutting down\)/);
    assert.equal(pty.vt.cursorVisible, true);
    assert.match(readPlain(), /conductor ws:\/\/\S+: stopped/);
  });
});
