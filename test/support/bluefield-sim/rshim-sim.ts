/**
 * One simulated rshim daemon and the DPU behind it, as a program of its own (rshim-sim-main.ts
 * runs it; lab.ts starts one per card). It keeps the daemon's device files under <dev>/rshimN:
 *
 * - `misc`: a plain file rewritten (temp file + rename) in rshim_fuse_misc_read's `%-16s value`
 *   format. A command is whatever first line differs from the one last written there: a writer
 *   puts `KEY value\n` at offset 0 (`echo ... > misc`, or dd conv=notrunc). Commands are applied
 *   within a poll (fs.watch plus a 40 ms backstop), not synchronously as CUSE would, so a writer
 *   should read a setting back before writing the next one. Every inode published recently is
 *   watched too, so a write through a descriptor opened just before a rewrite is not lost.
 *   Reads cannot be seen on a plain file, so CLEAR_ON_READ is emulated through the access time:
 *   each published file starts with an old atime, the first read (relatime) moves it, and the log
 *   lines that file showed are then taken out of the ring.
 * - `boot`: a FIFO. The DPU side reads it (optionally paced), follows the BFB as it arrives and
 *   takes the bytes after the last image as bf.cfg. Opening a FIFO cannot fail the way the CUSE
 *   device does, so refusals are approximated: in drop mode and secure NIC mode `boot` becomes a
 *   character node with no driver (open fails with ENXIO) when mknod is allowed, and otherwise,
 *   and for a busy device, the read end is closed on the first byte (the writer gets EPIPE; a
 *   stream that fits in the pipe buffer may still look written). The device's BOOT_TIMEOUT also
 *   ends in EPIPE rather than ETIMEDOUT. Two writers back to back with no moment between them
 *   read as one stream, as a FIFO cannot tell them apart.
 *
 * The stream is checked as it arrives (bfb-reader.ts). Once the first image is in and intact the
 * boot loader's lines start while the rest still streams; the installer's follow once all of it
 * is in, from the timeline fixtures. A stream that fails the check makes the DPU hang without an
 * error line: with a bad first image BL2 never runs and nothing is logged, and a later bad or
 * missing image stops it after its BL2 lines. No captured ` ERR[BL2]` line for this exists, and
 * an invented one would teach agents to expect text the hardware may never print.
 *
 * The DPU's rshim log is the hardware ring the kernel driver writes: 127 eight-byte words, a
 * header word per message, and a message that does not fit is cut or dropped (mlxbf-bootctl
 * rsh_log_store). A SoC reset starts it afresh (opening boot, the installer's reboot, SW_RESET,
 * a power cycle): the installers sleep before `reboot` so that their last lines "are pulled by
 * the rshim service" first (bfb-build debian/12/install.sh). Between resets, lines of the running
 * system stay until a CLEAR_ON_READ read takes them, which is how an earlier install's
 * `DPU is ready` can still be there when an agent starts.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, type Hash } from 'node:crypto';
import fs from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { BfbStreamReader, type BfbReadResult, type SimBfbImage } from './bfb-reader.js';
import type { SimGeneration } from './sysfs.js';

const execFileAsync = promisify(execFile);

/* ---------------------------------------------------------------- shared types */

export type FaultName = 'critical' | 'err' | 'stall' | 'never-ready' | 'bmc' | 'locked' | 'busy';

export interface SimFaults {
  /** Log `CRITICAL ERROR` while installing, then stop. */
  critical?: boolean;
  /** The installer fails: ` ERR[MISC]: Installation failed`. */
  err?: boolean;
  /** Stop reading the boot stream after this many bytes; BOOT_TIMEOUT later the stream is closed. */
  stall?: number | false;
  /** Install completes but the OS never reports `Linux up` / `DPU is ready`. */
  'never-ready'?: boolean;
  /** Another backend (the DPU's BMC) owns the rshim: drop mode. */
  bmc?: boolean;
  /** BlueField-3 secure NIC mode: boot refused. */
  locked?: boolean;
  /** Another process holds boot open for writing (the lab starts it). */
  busy?: boolean;
}

export type SimMode = 'dpu' | 'nic' | 'separated_host';

export type DpuPhase =
  'running' | 'no-os' | 'receiving' | 'booting' | 'installing' | 'rebooting' | 'ready' | 'failed' | 'hung';

export interface RshimSimConfig {
  /** N of /dev/rshimN. */
  index: number;
  devDir: string;
  stateDir: string;
  dpuRoot: string;
  generation: SimGeneration;
  /** misc DEV_NAME, `pcie-<bdf>` or `pcie-lf-<bdf>`. */
  devName: string;
  revision: number;
  /** OPN_STR (BF2 and later). */
  opn: string;
  mode: SimMode;
  timelineFile: string;
  faults: SimFaults;
  bootTimeout: number;
  displayLevel: number;
  /** Daemons before 2023 print no BF_MODE, USB_TIMEOUT, FORCE_CMD or CLEAR_ON_READ. */
  legacyDaemon: boolean;
  /** Leave the tail of an earlier install (`Linux up`, `DPU is ready`) in the log ring. */
  staleReady: boolean;
  /** Version on the DPU's eMMC at start; null for none. */
  installed: string | null;
  /** Bytes per second taken from boot; null for as fast as it comes. */
  rate: number | null;
  /** DPU time runs this many times faster than real time. */
  speed: number;
  /** Size of the log ring in 8-byte words; null for unbounded. */
  logWords: number | null;
  /**
   * Real milliseconds at least between the installer's last line and the reboot that resets the
   * ring. The installers wait 3 s for the host to pull their lines; time sped up must not shorten
   * that below a host's poll interval.
   */
  rebootPauseMs: number;
  /** UP_TIME at start (BF3), seconds. */
  upTime: number;
}

export interface HookRun {
  name: 'bfb_modify_os';
  declared: boolean;
  exitCode: number | null;
  signal: string | null;
  output: string;
  error: string | null;
}

export interface ReceivedStream {
  session: number;
  startedAt: string;
  endedAt: string | null;
  outcome: 'streaming' | 'complete' | 'empty' | 'refused' | 'timeout';
  refusedBecause: 'drop-mode' | 'locked' | 'busy' | null;
  /** Every byte read from boot. */
  bytes: number;
  sha256: string | null;
  /** null while streaming. */
  valid: boolean | null;
  error: string | null;
  bfbBytes: number | null;
  bfbSha256: string | null;
  images: SimBfbImage[];
  version: string | null;
  /** The bytes after the BFB, NULs removed, as the installer keeps them; null when none came. */
  cfg: string | null;
  cfgBytes: number;
  cfgSyntaxOk: boolean | null;
  hook: HookRun | null;
  /** BOOT_RESET_SKIP was 1: the SoC was not reset for this stream. */
  resetSkipped: boolean;
  /** Read stopped here on purpose (the stall fault). */
  stalledAt: number | null;
}

export interface MiscCommand {
  at: string;
  text: string;
  accepted: boolean;
  error: string | null;
}

export interface LoggedLine {
  at: string;
  /** As misc shows it: ` INFO[MISC]: DPU is ready`. */
  line: string;
  /** The ring was full: the line never reached the host. */
  dropped: boolean;
  /** The ring had room for part of it only. */
  truncated: boolean;
}

export interface SimState {
  index: number;
  phase: DpuPhase;
  mode: SimMode;
  installedVersion: string | null;
  displayLevel: number;
  bootTimeout: number;
  dropMode: number;
  clearOnRead: number;
  bootMode: number;
  bootResetSkip: number;
  secureNicMode: number;
  forceCmd: number;
  faults: SimFaults;
  sessions: number;
  /** Log lines now in the ring (what a level-2 read would show). */
  ring: string[];
  ringWords: number;
}

/** Requests the lab sends on the child's stdin, one JSON object a line. */
export type SimRequest =
  | { id: number; op: 'state' | 'received' | 'sessions' | 'logLines' | 'commands' | 'misc' | 'shutdown' }
  | { id: number; op: 'setFault'; name: FaultName; value: boolean | number }
  | { id: number; op: 'powerCycle'; mode?: SimMode }
  | { id: number; op: 'setMode'; mode: SimMode };

/** A request before the lab numbers it. */
export type SimCall = SimRequest extends infer R ? (R extends unknown ? Omit<R, 'id'> : never) : never;

export type SimResponse =
  | { id: number; ok: true; result: unknown }
  | { id: number; ok: false; error: string }
  | { event: 'ready'; pid: number }
  | { event: 'fatal'; error: string };

/* ---------------------------------------------------------------- misc text */

export interface MiscView {
  generation: SimGeneration;
  legacy: boolean;
  displayLevel: number;
  bfMode: string;
  bootMode: number;
  bootTimeout: number;
  usbTimeout: number;
  dropMode: number;
  devName: string;
  devInfo: string;
  opn: string;
  upTime: number;
  secureNicMode: number;
  forceCmd: number;
  bootResetSkip: number;
  peerMac: string;
  pxeId: number;
  vlan: [number, number];
  clearOnRead: number;
  /** Lines in the ring, shown at DISPLAY_LEVEL 2. */
  log: string[];
}

const key = (name: string): string => name.padEnd(16);

/** misc as rshim_fuse_misc_read prints it (rshim-user-space src/rshim_fuse.c). */
export const renderMisc = (view: MiscView): string => {
  const bf3 = view.generation === 'BF3';
  const lines = [`${key('DISPLAY_LEVEL')}${view.displayLevel} (0:basic, 1:advanced, 2:log)`];
  if (bf3 && !view.legacy) lines.push(`${key('BF_MODE')}${view.bfMode}`);
  lines.push(`${key('BOOT_MODE')}${view.bootMode} (0:rshim, 1:emmc, 2:emmc-boot-swap)`);
  lines.push(`${key('BOOT_TIMEOUT')}${view.bootTimeout} (seconds)`);
  if (!view.legacy) lines.push(`${key('USB_TIMEOUT')}${view.usbTimeout} (seconds)`);
  lines.push(`${key('DROP_MODE')}${view.dropMode} (0:normal, 1:drop)`);
  lines.push(`${key('SW_RESET')}0 (1: reset)`);
  lines.push(`${key('DEV_NAME')}${view.devName}`);
  lines.push(`${key('DEV_INFO')}${view.devInfo}`);
  if (view.generation !== 'BF1') lines.push(`${key('OPN_STR')}${view.opn}`);
  if (bf3) {
    lines.push(`${key('UP_TIME')}${view.upTime}(s)`);
    lines.push(`${key('SECURE_NIC_MODE')}${view.secureNicMode} (0:no, 1:yes)`);
  }
  if (!view.legacy) lines.push(`${key('FORCE_CMD')}${view.forceCmd} (1: send Force command)`);
  if (view.displayLevel === 1) {
    lines.push(`${key('BOOT_RESET_SKIP')}${view.bootResetSkip} (1: skip)`);
    lines.push(`${key('PEER_MAC')}${view.peerMac} (rw)`);
    lines.push(`${key('PXE_ID')}0x${view.pxeId.toString(16).padStart(8, '0')} (rw)`);
    lines.push(`${key('VLAN_ID')}${view.vlan[0]} ${view.vlan[1]} (rw)`);
    if (!view.legacy) lines.push(`${key('CLEAR_ON_READ')}${view.clearOnRead} (0:no, 1:yes)`);
  } else if (view.displayLevel === 2) {
    lines.push('---------------------------------------');
    lines.push('             Log Messages');
    lines.push('---------------------------------------');
    lines.push(...view.log);
  }
  return `${lines.join('\n')}\n`;
};

/* ---------------------------------------------------------------- timeline */

export interface TimelineStep {
  phase: 'boot' | 'install' | 'emmc' | 'up';
  delayMs: number;
  when: string;
  line: string;
}

export const parseTimeline = (text: string): TimelineStep[] => {
  const steps: TimelineStep[] = [];
  for (const raw of text.split('\n')) {
    if (raw.trim() === '' || raw.startsWith('#')) continue;
    const [phase, delay, when, ...rest] = raw.split('\t');
    const line = rest.join('\t');
    if (!['boot', 'install', 'emmc', 'up'].includes(phase ?? '') || !/^\d+$/.test(delay ?? '') || !when)
      throw new Error(`bad timeline line: ${JSON.stringify(raw)}`);
    steps.push({ phase: phase as TimelineStep['phase'], delayMs: Number(delay), when, line });
  }
  return steps;
};

const LOG_LINE = /^ (INFO|WARN|ERR|ASSERT)\[([A-Z0-9]+)\]: (.*)$/;

/** Ring words a message takes: its header and its text in 8-byte words. */
export const messageWords = (text: string): number => 1 + Math.ceil(Buffer.byteLength(text, 'latin1') / 8);

export interface RingEntry {
  seq: number;
  line: string;
  words: number;
}

/**
 * The rshim log ring as mlxbf-bootctl's rsh_log_store fills it: a message takes a header word and
 * its text in 8-byte words; one that would reach the last word is cut to what fits, and dropped
 * when nothing does.
 */
export class LogRing {
  private entries: RingEntry[] = [];
  private used = 0;
  private seq = 0;

  constructor(private readonly limit: number | null) {}

  /** Adds ` LEVEL[MODULE]: text`; says whether the ring had to cut or drop it. */
  add(line: string): { dropped: boolean; truncated: boolean } {
    const match = LOG_LINE.exec(line);
    const text = match ? match[3]! : line.trim();
    const whole = messageWords(text) - 1;
    let num = whole;
    let shown = line;
    if (this.limit !== null) {
      // if (idx + num + 1 >= MAX) num = MAX - idx - 1; if (num <= 0) goto done;
      if (this.used + num + 1 >= this.limit) num = this.limit - this.used - 1;
      if (num <= 0) return { dropped: true, truncated: false };
      if (num < whole) shown = line.slice(0, line.length - text.length) + text.slice(0, num * 8);
    }
    this.seq += 1;
    this.entries.push({ seq: this.seq, line: shown, words: num + 1 });
    this.used += num + 1;
    return { dropped: false, truncated: num < whole };
  }

  /** What a CLEAR_ON_READ read does to the lines it showed. */
  consumeUpTo(seq: number): boolean {
    const before = this.entries.length;
    this.entries = this.entries.filter((entry) => entry.seq > seq);
    this.used = this.entries.reduce((sum, entry) => sum + entry.words, 0);
    return this.entries.length !== before;
  }

  clear(): void {
    this.entries = [];
    this.used = 0;
  }

  get lines(): string[] {
    return this.entries.map((entry) => entry.line);
  }

  get words(): number {
    return this.used;
  }

  get lastSeq(): number {
    return this.entries.at(-1)?.seq ?? 0;
  }
}

/* ---------------------------------------------------------------- misc file */

interface PublishedFile {
  fd: number;
  ino: number;
  firstLine: string;
  /** Highest log sequence number this file showed (CLEAR_ON_READ consumes up to it). */
  shownSeq: number;
  readSeen: boolean;
  expires: number;
}

const OLD_ATIME = new Date(1000);
const O_NOATIME = fs.constants.O_NOATIME ?? 0;

const firstLineOf = (text: string): string => {
  const end = text.indexOf('\n');
  return end === -1 ? text : text.slice(0, end);
};

/* ---------------------------------------------------------------- the simulator */

interface InstallContext {
  cfg: boolean;
  password: boolean;
  cfgValid: boolean;
  version: string | null;
  session: ReceivedStream;
}

class Cancelled extends Error {}

export class RshimSim {
  private readonly misc: string;
  private readonly boot: string;
  private readonly tmp: string;
  private readonly timeline: TimelineStep[];
  private published: PublishedFile | null = null;
  private recent: PublishedFile[] = [];
  private publishTimer: NodeJS.Timeout | null = null;
  private pollTimer: NodeJS.Timeout | null = null;
  private upTimer: NodeJS.Timeout | null = null;
  private watcher: fs.FSWatcher | null = null;
  private closed = false;

  private displayLevel: number;
  private bootTimeout: number;
  private usbTimeout = 40;
  private dropMode = 0;
  private clearOnRead = 0;
  private bootMode = 1;
  private bootResetSkip = 0;
  private forceCmd = 0;
  private pxeId = 0;
  private vlan: [number, number] = [0, 0];
  private peerMacSet = '00:1a:ca:ff:ff:01';
  private upSince: number;
  private mode: SimMode;
  private faults: SimFaults;
  private phase: DpuPhase;
  private installedVersion: string | null;

  private readonly ring: LogRing;
  private readonly history: LoggedLine[] = [];
  private readonly commands: MiscCommand[] = [];
  private readonly sessions: ReceivedStream[] = [];

  private socket: net.Socket | null = null;
  private reopenTimer: NodeJS.Timeout | null = null;
  private bootNode: 'fifo' | 'dead' = 'fifo';
  private canMknod = true;
  private stream: {
    record: ReceivedStream;
    reader: BfbStreamReader;
    hash: Hash;
    bfbHash: Hash;
    started: number;
    stallTimer: NodeJS.Timeout | null;
    bootPhase: Promise<boolean> | null;
    /** The SoC was reset while the stream came in: nothing boots from it. */
    detached: boolean;
  } | null = null;
  /** The boot stream in progress turned out unusable: the boot loader stops after BL2. */
  private bootBroken = false;
  /** Bumped to cancel whatever the DPU was doing (a reset, a new stream, a power cycle). */
  private epoch = 0;
  /** Pending waits of the DPU's own progress, rejected when it is cancelled. */
  private readonly dpuTimers = new Map<NodeJS.Timeout, () => void>();
  /** Timers of the daemon side (pacing, ownership hand-over), which a DPU reset leaves alone. */
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly hooks = new Set<ChildProcess>();

  constructor(private readonly config: RshimSimConfig) {
    this.misc = path.join(config.devDir, 'misc');
    this.boot = path.join(config.devDir, 'boot');
    this.tmp = path.join(config.stateDir, `rshim${config.index}.misc.tmp`);
    this.timeline = parseTimeline(fs.readFileSync(config.timelineFile, 'utf8'));
    this.ring = new LogRing(config.logWords);
    this.displayLevel = config.displayLevel;
    this.bootTimeout = config.bootTimeout;
    this.mode = config.mode;
    this.faults = { ...config.faults };
    this.installedVersion = config.installed;
    this.phase = config.installed ? 'running' : 'no-os';
    this.upSince = Date.now() - config.upTime * 1000;
    if (this.faults.bmc) this.dropMode = 1;
  }

  async start(): Promise<void> {
    await mkdir(this.config.devDir, { recursive: true });
    await mkdir(this.config.stateDir, { recursive: true });
    if (this.config.staleReady) {
      this.log(' INFO[MISC]: Linux up');
      this.log(' INFO[MISC]: DPU is ready');
    }
    this.publish();
    this.canMknod = this.probeMknod();
    this.applyBootNode();
    this.watcher = fs.watch(this.config.devDir, () => this.checkMisc());
    this.watcher.on('error', () => {});
    this.pollTimer = setInterval(() => this.checkMisc(), 40);
    if (this.config.generation === 'BF3') this.upTimer = setInterval(() => this.schedulePublish(), 1000);
  }

  async stop(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.epoch += 1;
    for (const timer of [this.pollTimer, this.upTimer, this.publishTimer, this.reopenTimer]) {
      if (timer) clearTimeout(timer);
    }
    for (const timer of [...this.timers, ...this.dpuTimers.keys()]) clearTimeout(timer);
    if (this.stream?.stallTimer) clearTimeout(this.stream.stallTimer);
    for (const hook of this.hooks) killGroup(hook);
    this.watcher?.close();
    this.socket?.destroy();
    for (const file of [this.published, ...this.recent]) if (file) fs.closeSync(file.fd);
    await rm(this.config.devDir, { recursive: true, force: true });
    await rm(this.tmp, { force: true });
  }

  /* ------------------------------------------------------------ lab requests */

  async handle(request: SimRequest): Promise<unknown> {
    switch (request.op) {
      case 'state':
        return this.state();
      case 'received':
        return this.sessions.at(-1) ?? null;
      case 'sessions':
        return this.sessions;
      case 'logLines':
        return this.history;
      case 'commands':
        return this.commands;
      case 'misc':
        return this.render();
      // Changes are published before the answer, so the lab's caller reads them at once.
      case 'setFault':
        this.setFault(request.name, request.value);
        this.publish();
        return this.state();
      case 'setMode':
        this.mode = request.mode;
        this.publish();
        return this.state();
      case 'powerCycle':
        if (request.mode) this.mode = request.mode;
        this.powerCycle();
        this.publish();
        return this.state();
      case 'shutdown':
        await this.stop();
        return null;
    }
  }

  private state(): SimState {
    return {
      index: this.config.index,
      phase: this.phase,
      mode: this.mode,
      installedVersion: this.installedVersion,
      displayLevel: this.displayLevel,
      bootTimeout: this.bootTimeout,
      dropMode: this.dropMode,
      clearOnRead: this.clearOnRead,
      bootMode: this.bootMode,
      bootResetSkip: this.bootResetSkip,
      secureNicMode: this.locked() ? 1 : 0,
      forceCmd: this.forceCmd,
      faults: { ...this.faults },
      sessions: this.sessions.length,
      ring: this.ring.lines,
      ringWords: this.ring.words,
    };
  }

  private setFault(name: FaultName, value: boolean | number): void {
    switch (name) {
      case 'stall':
        this.faults.stall = typeof value === 'number' ? value : value ? 0 : false;
        break;
      case 'locked':
        if (value && this.config.generation !== 'BF3')
          throw new Error('secure NIC mode exists on BlueField-3 only');
        this.faults.locked = Boolean(value);
        break;
      case 'bmc':
        this.faults.bmc = Boolean(value);
        this.dropMode = value ? 1 : 0;
        this.forceCmd = 0;
        break;
      default:
        this.faults[name] = Boolean(value);
    }
    this.applyBootNode();
    this.schedulePublish();
  }

  private locked(): boolean {
    return this.config.generation === 'BF3' && Boolean(this.faults.locked);
  }

  /* ------------------------------------------------------------ the log ring */

  private log(line: string): void {
    const { dropped, truncated } = this.ring.add(line);
    this.history.push({ at: new Date().toISOString(), line, dropped, truncated });
    if (!dropped) this.schedulePublish();
  }

  private consumeUpTo(seq: number): void {
    if (this.ring.consumeUpTo(seq)) this.schedulePublish();
  }

  /** The SoC reset: the ring starts afresh. */
  private resetRing(): void {
    this.ring.clear();
    this.schedulePublish();
  }

  /* ------------------------------------------------------------ misc */

  private view(): MiscView {
    const ready = this.phase === 'ready' || this.phase === 'running';
    return {
      generation: this.config.generation,
      legacy: this.config.legacyDaemon,
      displayLevel: this.displayLevel,
      bfMode: this.mode === 'nic' ? 'NIC mode' : 'DPU mode',
      bootMode: this.bootMode,
      bootTimeout: this.bootTimeout,
      usbTimeout: this.usbTimeout,
      dropMode: this.dropMode,
      devName: this.config.devName,
      devInfo: `BlueField-${this.config.generation.slice(2)}(Rev ${this.config.revision})`,
      opn: this.config.opn,
      upTime: Math.max(0, Math.floor((Date.now() - this.upSince) / 1000)),
      secureNicMode: this.locked() ? 1 : 0,
      forceCmd: this.forceCmd,
      bootResetSkip: this.bootResetSkip,
      // The daemon asks the DPU and shows zeros when nothing answers within a second.
      peerMac: ready ? this.peerMacSet : '00:00:00:00:00:00',
      pxeId: this.pxeId,
      vlan: this.vlan,
      clearOnRead: this.clearOnRead,
      // In drop mode register reads return nothing: the ring looks empty.
      log: this.dropMode ? [] : this.ring.lines,
    };
  }

  private render(): string {
    return renderMisc(this.view());
  }

  private schedulePublish(): void {
    if (this.closed || this.publishTimer) return;
    this.publishTimer = setTimeout(() => {
      this.publishTimer = null;
      this.publish();
    }, 5);
  }

  /** Writes misc anew; commands pending in the old file are taken first so none is lost. */
  private publish(): void {
    if (this.closed) return;
    this.checkMisc(false);
    const text = this.render();
    const shownSeq = this.displayLevel === 2 && !this.dropMode ? this.ring.lastSeq : 0;
    fs.writeFileSync(this.tmp, text);
    fs.utimesSync(this.tmp, OLD_ATIME, new Date());
    const fd = fs.openSync(this.tmp, fs.constants.O_RDONLY | O_NOATIME);
    const ino = fs.fstatSync(fd).ino;
    fs.renameSync(this.tmp, this.misc);
    if (this.published) {
      this.published.expires = Date.now() + 3000;
      this.recent.push(this.published);
    }
    this.published = { fd, ino, firstLine: firstLineOf(text), shownSeq, readSeen: false, expires: Infinity };
  }

  private readFd(fd: number): string {
    const buffer = Buffer.alloc(8192);
    const length = fs.readSync(fd, buffer, 0, buffer.length, 0);
    return buffer.subarray(0, length).toString('latin1');
  }

  /** Looks for commands and reads in the published file and the ones it replaced. */
  private checkMisc(republish = true): void {
    if (this.closed || !this.published) return;
    const now = Date.now();
    let changed = false;
    for (const file of [...this.recent, this.published]) {
      const text = this.readFd(file.fd);
      if (text !== '') {
        const line = firstLineOf(text);
        if (line !== file.firstLine) {
          file.firstLine = line;
          this.command(line);
          changed = true;
        }
      }
      if (!file.readSeen && file.shownSeq > 0 && fs.fstatSync(file.fd).atimeMs > OLD_ATIME.getTime()) {
        file.readSeen = true;
        if (this.clearOnRead) {
          this.consumeUpTo(file.shownSeq);
          changed = true;
        }
      }
    }
    this.recent = this.recent.filter((file) => {
      if (file.expires > now) return true;
      fs.closeSync(file.fd);
      return false;
    });
    // Someone replaced or removed misc (an editor, `cp`): take its first line, then restore it.
    let foreign = false;
    try {
      const stat = fs.statSync(this.misc);
      if (stat.ino !== this.published.ino) {
        foreign = true;
        const fd = fs.openSync(this.misc, fs.constants.O_RDONLY | O_NOATIME);
        try {
          const line = firstLineOf(this.readFd(fd));
          if (line !== '') this.command(line);
        } finally {
          fs.closeSync(fd);
        }
      }
    } catch {
      foreign = true;
    }
    if ((changed || foreign) && republish) this.publish();
    else if (changed || foreign) this.schedulePublish();
  }

  private command(text: string): void {
    const record: MiscCommand = { at: new Date().toISOString(), text, accepted: true, error: null };
    this.commands.push(record);
    try {
      this.apply(text);
    } catch (error) {
      record.accepted = false;
      record.error = (error as Error).message;
    }
  }

  /** rshim_fuse_misc_write: `%31s` key, then the value as the key wants it (EINVAL otherwise). */
  private apply(text: string): void {
    const match = /^\s*(\S+)(.*)$/.exec(text);
    if (!match) throw new Error('EINVAL: no key');
    const name = match[1]!;
    const rest = match[2]!;
    const int = (): number => {
      const m = /^\s*([+-]?\d+)/.exec(rest);
      if (!m) throw new Error(`EINVAL: ${name} needs a number`);
      return Number(m[1]);
    };
    const hexValue = (): number => {
      const m = /^\s*(?:0[xX])?([0-9a-fA-F]+)/.exec(rest);
      if (!m) throw new Error(`EINVAL: ${name} needs a hex number`);
      return parseInt(m[1]!, 16);
    };
    switch (name) {
      case 'DISPLAY_LEVEL':
        this.displayLevel = int();
        break;
      case 'BOOT_TIMEOUT':
        this.bootTimeout = int();
        this.restartStallTimer();
        break;
      case 'USB_TIMEOUT': {
        const value = int();
        if (value < 0 || value > 300) throw new Error('EINVAL: USB_TIMEOUT must be 0..300');
        this.usbTimeout = value === 0 ? 40 : value;
        break;
      }
      case 'DROP_MODE': {
        const value = int();
        // With the BMC attached, leaving drop mode finds it still there and drops again.
        this.dropMode = this.faults.bmc || value ? 1 : 0;
        this.applyBootNode();
        break;
      }
      case 'CLEAR_ON_READ':
        this.clearOnRead = int() ? 1 : 0;
        break;
      case 'BOOT_MODE':
        this.bootMode = hexValue() & 0x3;
        break;
      case 'SW_RESET':
        if (hexValue()) this.reboot(false);
        break;
      case 'BOOT_RESET_SKIP':
        this.bootResetSkip = hexValue() ? 1 : 0;
        break;
      case 'PEER_MAC': {
        const m = /^\s*([0-9a-fA-F]{1,2}(?::[0-9a-fA-F]{1,2}){5})/.exec(rest);
        if (!m) throw new Error('EINVAL: PEER_MAC needs a MAC address');
        this.peerMacSet = m[1]!
          .split(':')
          .map((part) => part.padStart(2, '0').toLowerCase())
          .join(':');
        break;
      }
      case 'PXE_ID':
        this.pxeId = hexValue();
        break;
      case 'VLAN_ID': {
        const m = /^\s*(\d+)(?:\s+(\d+))?/.exec(rest);
        if (!m) throw new Error('EINVAL: VLAN_ID needs numbers');
        this.vlan = [Number(m[1]), Number(m[2] ?? 0)];
        break;
      }
      case 'OPN_STR':
      case 'DEBUG_CODE':
        if (rest.trim() === '') throw new Error(`EINVAL: ${name} needs a value`);
        break;
      case 'FORCE_CMD':
        if (hexValue()) {
          if (!this.dropMode) throw new Error('EINVAL: FORCE_CMD is only taken in drop mode');
          this.forceCmd = 1;
          // The BMC's rshim hands the device over; the daemon then leaves drop mode.
          this.later(300, () => {
            this.faults.bmc = false;
            this.dropMode = 0;
            this.forceCmd = 0;
            this.applyBootNode();
            this.schedulePublish();
          });
        }
        break;
      case 'DEV_NAME':
        if (!this.config.devName.startsWith('pcie-') || this.config.devName.startsWith('pcie-lf-'))
          throw new Error('EINVAL: DEV_NAME refresh is for the PCIe backend');
        break;
      default:
        throw new Error(`EINVAL: unknown key ${name}`);
    }
    this.schedulePublish();
  }

  /* ------------------------------------------------------------ boot device */

  private probeMknod(): boolean {
    const probe = path.join(this.config.stateDir, `rshim${this.config.index}.probe`);
    try {
      execFileSync('mknod', [probe, 'c', '0', '0'], { stdio: 'ignore' });
      try {
        fs.closeSync(fs.openSync(probe, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK));
        return false;
      } catch (error) {
        return (error as NodeJS.ErrnoException).code === 'ENXIO';
      } finally {
        fs.rmSync(probe, { force: true });
      }
    } catch {
      return false;
    }
  }

  private refusal(): ReceivedStream['refusedBecause'] {
    if (this.dropMode) return 'drop-mode';
    if (this.locked()) return 'locked';
    if (this.faults.busy) return 'busy';
    return null;
  }

  /** Puts the right kind of node at boot: a FIFO with a reader, or one whose open fails. */
  private applyBootNode(): void {
    if (this.closed) return;
    const refusal = this.refusal();
    const want = (refusal === 'drop-mode' || refusal === 'locked') && this.canMknod ? 'dead' : 'fifo';
    const exists = fs.existsSync(this.boot);
    if (want === this.bootNode && exists) return;
    const tmp = path.join(this.config.devDir, `.boot.${process.pid}`);
    fs.rmSync(tmp, { force: true });
    if (want === 'dead') execFileSync('mknod', [tmp, 'c', '0', '0'], { stdio: 'ignore' });
    else execFileSync('mkfifo', ['-m', '0600', tmp], { stdio: 'ignore' });
    fs.renameSync(tmp, this.boot);
    this.bootNode = want;
    this.socket?.destroy();
    this.socket = null;
    if (want === 'fifo') this.openReader();
  }

  private openReader(): void {
    if (this.closed || this.bootNode !== 'fifo') return;
    if (this.reopenTimer) {
      clearTimeout(this.reopenTimer);
      this.reopenTimer = null;
    }
    let fd: number;
    try {
      fd = fs.openSync(this.boot, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    } catch {
      // boot was removed or replaced behind the daemon's back: put it back.
      this.later(100, () => {
        this.bootNode = 'fifo';
        fs.rmSync(this.boot, { force: true });
        this.applyBootNode();
      });
      return;
    }
    const socket = new net.Socket({ fd, readable: true, writable: false });
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => this.onData(socket, chunk));
    socket.on('end', () => this.onEnd(socket));
    socket.on('error', () => this.reopenSoon(socket));
  }

  private reopenSoon(socket: net.Socket, delayMs = 20): void {
    socket.destroy();
    if (this.socket !== socket) return;
    this.socket = null;
    this.reopenTimer = setTimeout(() => {
      this.reopenTimer = null;
      this.openReader();
    }, delayMs);
  }

  private onData(socket: net.Socket, chunk: Buffer): void {
    if (socket !== this.socket) return;
    const refusal = this.refusal();
    if (refusal) {
      const record = this.newRecord();
      record.outcome = 'refused';
      record.refusedBecause = refusal;
      record.bytes = chunk.length;
      record.endedAt = record.startedAt;
      record.valid = null;
      this.sessions.push(record);
      // Kept closed a little so the writer's next write finds no reader and fails.
      this.reopenSoon(socket, 100);
      return;
    }
    if (!this.stream) this.beginStream();
    const stream = this.stream!;
    const before = stream.record.bytes;
    stream.record.bytes += chunk.length;
    stream.hash.update(chunk);
    stream.reader.push(chunk);
    const bfbEnd = stream.reader.bfbLength ?? Infinity;
    if (before < bfbEnd) stream.bfbHash.update(chunk.subarray(0, Math.min(chunk.length, bfbEnd - before)));
    if (stream.reader.status === 'invalid') this.hang();

    const stall = this.faults.stall;
    if (typeof stall === 'number' && stream.record.bytes >= stall && stream.record.stalledAt === null) {
      stream.record.stalledAt = stream.record.bytes;
      socket.pause();
      this.restartStallTimer();
      return;
    }
    if (this.config.rate) {
      const due = stream.started + (stream.record.bytes / this.config.rate) * 1000;
      const wait = due - Date.now();
      if (wait > 1) {
        socket.pause();
        this.later(wait, () => {
          if (this.socket === socket && stream.record.stalledAt === null) socket.resume();
        });
      }
    }
  }

  private restartStallTimer(): void {
    const stream = this.stream;
    if (!stream || stream.record.stalledAt === null) return;
    if (stream.stallTimer) clearTimeout(stream.stallTimer);
    // The device's own BOOT_TIMEOUT: no progress for that long ends the writer's write.
    stream.stallTimer = setTimeout(() => {
      stream.stallTimer = null;
      if (this.stream !== stream) return;
      this.finishStream('timeout');
      if (this.socket) this.reopenSoon(this.socket, 100);
    }, this.bootTimeout * 1000);
  }

  private newRecord(): ReceivedStream {
    return {
      session: this.sessions.length + 1,
      startedAt: new Date().toISOString(),
      endedAt: null,
      outcome: 'streaming',
      refusedBecause: null,
      bytes: 0,
      sha256: null,
      valid: null,
      error: null,
      bfbBytes: null,
      bfbSha256: null,
      images: [],
      version: null,
      cfg: null,
      cfgBytes: 0,
      cfgSyntaxOk: null,
      hook: null,
      resetSkipped: this.bootResetSkip === 1,
      stalledAt: null,
    };
  }

  /** Opening boot resets the SoC (unless BOOT_RESET_SKIP) and points it at the rshim. */
  private beginStream(): void {
    const record = this.newRecord();
    this.sessions.push(record);
    // With BOOT_RESET_SKIP the running system takes the stream itself and goes on running.
    const epoch = record.resetSkipped ? this.epoch : this.cancelDpu();
    this.bootBroken = false;
    if (!record.resetSkipped) {
      this.upSince = Date.now();
      this.bootMode = 0;
      this.phase = 'receiving';
      this.resetRing();
    }
    const stream = {
      record,
      reader: new BfbStreamReader((_image, index) => {
        if (index === 0 && !record.resetSkipped && this.stream === stream && this.epoch === epoch)
          stream.bootPhase = this.play('boot', null, epoch);
      }),
      hash: createHash('sha256'),
      bfbHash: createHash('sha256'),
      started: Date.now(),
      stallTimer: null as NodeJS.Timeout | null,
      bootPhase: null as Promise<boolean> | null,
      detached: false,
    };
    this.stream = stream;
    this.schedulePublish();
  }

  private onEnd(socket: net.Socket): void {
    if (socket !== this.socket) return;
    // The next reader is opened before this one closes: a writer that opens right after the last
    // one closed must never find the FIFO without a reader (its data would be lost with EPIPE).
    this.socket = null;
    this.openReader();
    socket.destroy();
    if (this.stream) this.finishStream('complete');
    else
      this.sessions.push({
        ...this.newRecord(),
        outcome: 'empty',
        endedAt: new Date().toISOString(),
        valid: false,
        error: 'opened and closed without data',
      });
  }

  private finishStream(outcome: 'complete' | 'timeout'): void {
    const stream = this.stream;
    if (!stream) return;
    this.stream = null;
    if (stream.stallTimer) clearTimeout(stream.stallTimer);
    const record = stream.record;
    const result: BfbReadResult = stream.reader.end();
    record.endedAt = new Date().toISOString();
    record.outcome = outcome;
    record.sha256 = stream.hash.digest('hex');
    record.valid = outcome === 'complete' && result.valid;
    record.error = outcome === 'timeout' ? `boot timeout after ${this.bootTimeout} s` : result.error;
    record.images = result.images;
    record.version = result.version;
    record.bfbBytes = result.bfbBytes;
    record.bfbSha256 = result.valid ? stream.bfbHash.digest('hex') : null;
    record.cfgBytes = result.trailerBytes;
    if (result.valid && result.trailerBytes > 0)
      record.cfg = result.trailer.toString('latin1').replaceAll('\0', '');
    // Closing boot puts the boot mode back to eMMC.
    this.bootMode = 1;
    this.schedulePublish();
    if (stream.detached) {
      record.error ??= 'the SoC was reset while the stream came in';
      return;
    }
    if (!record.valid) {
      this.hang(stream);
      return;
    }
    const epoch = this.epoch;
    void this.install(record, stream.bootPhase, epoch);
  }

  /**
   * A stream the DPU cannot use. With a bad first image the boot ROM never starts BL2 and nothing
   * is logged; once BL2 runs from an intact first image, it stops before BL31 because what it
   * needs next is corrupt or missing. Either way the DPU then hangs without another word.
   */
  private hang(stream = this.stream): void {
    const bootPhase = stream?.bootPhase;
    if (bootPhase) {
      if (this.bootBroken) return;
      this.bootBroken = true;
      const epoch = this.epoch;
      void bootPhase.then(() => {
        if (this.epoch !== epoch || this.phase === 'hung') return;
        this.phase = 'hung';
        this.schedulePublish();
      });
      return;
    }
    this.cancelDpu();
    if (this.phase === 'receiving' || this.phase === 'booting') this.phase = 'hung';
    this.schedulePublish();
  }

  /* ------------------------------------------------------------ DPU behaviour */

  private cancelDpu(): number {
    this.epoch += 1;
    for (const [timer, cancel] of this.dpuTimers) {
      clearTimeout(timer);
      cancel();
    }
    this.dpuTimers.clear();
    for (const hook of this.hooks) killGroup(hook);
    return this.epoch;
  }

  private later(ms: number, fn: () => void): void {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      fn();
    }, ms);
    this.timers.add(timer);
  }

  private sleep(nominalMs: number, epoch: number, minMs = 1): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.epoch !== epoch || this.closed) return reject(new Cancelled());
      const timer = setTimeout(
        () => {
          this.dpuTimers.delete(timer);
          if (this.epoch !== epoch || this.closed) reject(new Cancelled());
          else resolve();
        },
        Math.max(minMs, nominalMs / this.config.speed),
      );
      this.dpuTimers.set(timer, () => reject(new Cancelled()));
    });
  }

  private holds(when: string, context: InstallContext | null): boolean {
    if (when === '-') return true;
    if (when.startsWith('fault:')) {
      const fault = when.slice('fault:'.length) as FaultName;
      return Boolean(this.faults[fault]);
    }
    const nicMode = this.config.generation === 'BF3' && this.mode === 'nic';
    switch (when) {
      case 'dpu':
        return !nicMode;
      case 'nic':
        return nicMode;
      case 'cfg':
        return context?.cfg ?? false;
      case 'password':
        return Boolean(context?.cfgValid && context.password);
      case 'modify_os':
        return Boolean(context?.cfgValid);
      default:
        throw new Error(`unknown timeline condition ${when}`);
    }
  }

  /**
   * Plays one phase of the timeline. Resolves false when a fault line ended the DPU's work or the
   * DPU was reset meanwhile.
   */
  private async play(
    phase: TimelineStep['phase'],
    context: InstallContext | null,
    epoch: number,
    firstDelayTaken = false,
  ): Promise<boolean> {
    const steps = this.timeline.filter((step) => step.phase === phase);
    try {
      for (const [index, step] of steps.entries()) {
        if (!this.holds(step.when, context)) continue;
        if (index === 0 && firstDelayTaken) {
          this.onLine(step.line, context);
          this.log(step.line);
          continue;
        }
        if (phase === 'boot' && this.bootBroken && !/\[(PSC|BL2)\]/.test(step.line)) {
          this.phase = 'hung';
          this.schedulePublish();
          return false;
        }
        await this.sleep(step.delayMs, epoch);
        if (step.when === 'modify_os') {
          await this.runModifyOs(context!, epoch);
          continue;
        }
        this.onLine(step.line, context);
        this.log(step.line);
        if (step.when.startsWith('fault:') && steps[index + 1]?.when !== step.when) {
          this.phase = 'failed';
          this.schedulePublish();
          return false;
        }
      }
      return true;
    } catch (error) {
      if (error instanceof Cancelled) return false;
      throw error;
    }
  }

  /** What the installer does at the points its log lines mark. */
  private onLine(line: string, context: InstallContext | null): void {
    if (line.includes('[BL2]: start')) this.phase = this.phase === 'rebooting' ? 'rebooting' : 'booting';
    if (!context) return;
    if (line.endsWith('installation started')) {
      // The target is repartitioned: whatever was installed is gone from here on.
      this.layOsImage(null);
      this.installedVersion = null;
      this.phase = 'installing';
    }
    if (line.endsWith('Installing OS image')) {
      this.layOsImage(context.version);
      this.installedVersion = context.version ?? 'unknown';
    }
    if (line.includes('CRITICAL ERROR')) {
      // The image never got fully written: nothing bootable is left.
      this.layOsImage(null);
      this.installedVersion = null;
    }
    if (line.endsWith('Rebooting...')) this.phase = 'rebooting';
  }

  private layOsImage(version: string | null): void {
    const root = this.config.dpuRoot;
    if (!path.isAbsolute(root) || path.resolve(root) === '/') throw new Error(`refusing to replace ${root}`);
    fs.rmSync(root, { recursive: true, force: true });
    fs.mkdirSync(path.join(root, 'etc'), { recursive: true });
    if (version !== null) fs.writeFileSync(path.join(root, 'etc', 'mlnx-release'), `${version}\n`);
  }

  private async install(
    record: ReceivedStream,
    bootPhase: Promise<boolean> | null,
    epoch: number,
  ): Promise<void> {
    try {
      if (record.resetSkipped) {
        // A deferred (runtime) upgrade: the running OS takes the stream; no reset, no reinstall.
        await this.sleep(20000, epoch);
        this.log(' INFO[MISC]: Runtime upgrade finished');
        return;
      }
      const booted = bootPhase ? await bootPhase : false;
      if (!booted || this.epoch !== epoch) return;
      const cfgText = record.cfg;
      let cfgValid = false;
      if (cfgText !== null) {
        const file = path.join(
          this.config.stateDir,
          `rshim${this.config.index}-session${record.session}-bf.cfg`,
        );
        await writeFile(file, cfgText, { mode: 0o600 });
        cfgValid = await bashSyntaxOk(file);
        record.cfgSyntaxOk = cfgValid;
      }
      const context: InstallContext = {
        cfg: cfgText !== null,
        cfgValid,
        password: cfgText !== null && /^\s*(?:export\s+)?ubuntu_PASSWORD=/m.test(cfgText),
        version: record.version,
        session: record,
      };
      this.phase = 'installing';
      if (!(await this.play('install', context, epoch))) return;
      await this.bootFromEmmc(epoch, true);
    } catch (error) {
      if (!(error instanceof Cancelled)) throw error;
    }
  }

  private async bootFromEmmc(epoch: number, afterInstall = false): Promise<void> {
    this.phase = 'rebooting';
    this.schedulePublish();
    const steps = this.timeline.filter((step) => step.phase === 'emmc');
    try {
      // The reset comes after the first delay: the installer's pause for the host to pull its lines.
      await this.sleep(steps[0]?.delayMs ?? 0, epoch, afterInstall ? this.config.rebootPauseMs : 1);
    } catch (error) {
      if (error instanceof Cancelled) return;
      throw error;
    }
    this.upSince = Date.now();
    this.resetRing();
    if (!(await this.play('emmc', null, epoch, true))) return;
    if (this.installedVersion === null) {
      this.phase = 'no-os';
      this.schedulePublish();
      return;
    }
    if (this.faults['never-ready']) {
      this.phase = 'failed';
      this.schedulePublish();
      return;
    }
    if (!(await this.play('up', null, epoch))) return;
    this.phase = 'ready';
    this.schedulePublish();
  }

  /** SW_RESET or a power cycle: the Arm reboots from eMMC. */
  private reboot(powerCycle: boolean): void {
    const epoch = this.cancelDpu();
    if (this.stream) this.stream.detached = true;
    this.resetRing();
    if (powerCycle) {
      this.displayLevel = this.config.displayLevel;
      this.bootTimeout = this.config.bootTimeout;
      this.clearOnRead = 0;
      this.bootResetSkip = 0;
      this.dropMode = this.faults.bmc ? 1 : 0;
      this.forceCmd = 0;
      this.applyBootNode();
    }
    void this.bootFromEmmc(epoch);
  }

  private powerCycle(): void {
    this.reboot(true);
  }

  /** Sources bf.cfg and runs bfb_modify_os with the DPU's root on /mnt, in a mount namespace. */
  private async runModifyOs(context: InstallContext, epoch: number): Promise<void> {
    const cfgFile = path.join(
      this.config.stateDir,
      `rshim${this.config.index}-session${context.session.session}-bf.cfg`,
    );
    const run: HookRun = {
      name: 'bfb_modify_os',
      declared: false,
      exitCode: null,
      signal: null,
      output: '',
      error: null,
    };
    context.session.hook = run;
    const script = [
      'mount --bind "$BFSIM_ROOT" /mnt || { echo "cannot bind $BFSIM_ROOT on /mnt" >&2; exit 97; }',
      '. "$BFSIM_CFG"',
      'if declare -F bfb_modify_os >/dev/null; then echo declared >&3; bfb_modify_os; fi',
    ].join('\n');
    await new Promise<void>((resolve) => {
      let child: ChildProcess;
      try {
        child = spawn('unshare', ['--mount', '--propagation', 'private', 'bash', '-c', script], {
          cwd: '/',
          env: {
            PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
            HOME: '/root',
            BFSIM_ROOT: this.config.dpuRoot,
            BFSIM_CFG: cfgFile,
          },
          stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
          // Its own process group, so whatever the hook started dies with it.
          detached: true,
        });
      } catch (error) {
        run.error = (error as Error).message;
        resolve();
        return;
      }
      this.hooks.add(child);
      const timer = setTimeout(() => killGroup(child), 30_000);
      const append = (chunk: Buffer) => {
        if (run.output.length < 65536) run.output += chunk.toString('utf8');
      };
      child.stdout?.on('data', append);
      child.stderr?.on('data', append);
      child.stdio[3]?.on('data', () => {
        if (run.declared || this.epoch !== epoch) return;
        run.declared = true;
        this.log(' INFO[MISC]: Running bfb_modify_os from bf.cfg');
      });
      child.on('error', (error) => {
        run.error = error.message;
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        this.hooks.delete(child);
        run.exitCode = code;
        run.signal = signal;
        if (code === 97) run.error = run.output.trim() || 'cannot bind the DPU root on /mnt';
        resolve();
      });
    });
    if (this.epoch !== epoch) throw new Cancelled();
  }
}

const killGroup = (child: ChildProcess): void => {
  try {
    if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
  } catch {
    child.kill('SIGKILL');
  }
};

const bashSyntaxOk = async (file: string): Promise<boolean> => {
  try {
    await execFileAsync('bash', ['-n', file], { timeout: 10_000 });
    return true;
  } catch {
    return false;
  }
};

/** The config a child reads at start (written by the lab). */
export const readSimConfig = async (file: string): Promise<RshimSimConfig> =>
  JSON.parse(await readFile(file, 'utf8')) as RshimSimConfig;
