/**
 * Draws the status model on console devices (tty1, a serial line): redrawn in place on a terminal,
 * appended plain lines elsewhere. It must never hold up or crash the agent: devices are opened
 * non-blocking, at most one write per device is in flight (a frame that finds the previous write
 * unfinished, or the device full, is dropped and the next one carries the latest state), and a
 * device that fails is closed and reported once.
 */
import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import os from 'node:os';
import tty from 'node:tty';
import { readIdentity } from '../channel/identity.js';
import { collectSystemVendor } from '../hardware/generic/inventory/system.js';
import type { HardwarePaths } from '../hardware/paths.js';
import { errorMessage } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { plainPrefix, renderPlain, renderScreen } from './render.js';
import {
  StatusModel,
  type CommandSource,
  type IdentityView,
  type LinkSource,
  type LogSource,
  type StatusSnapshot,
} from './status-model.js';

export type ConsoleMode = 'ansi' | 'plain';

export interface ConsoleSize {
  columns: number;
  rows: number;
}

export interface DeviceStats {
  path: string;
  mode: ConsoleMode;
  frames: number;
  /** Frames not written because the previous write was unfinished or the device was full. */
  dropped: number;
  bytes: number;
  failed: string | null;
}

export interface StatusScreenOptions {
  devices: string[];
  /** bma-status-dumb: plain lines even on a terminal. */
  forcePlain: boolean;
  /** The TERM the agent runs with: unset or `dumb` means the terminal cannot be drawn on. */
  term: string | undefined;
  model: StatusModel;
  logger: Logger;
  /** Least time between two frames. */
  minIntervalMs?: number;
  /** A terminal is redrawn whole this often, for a console attached late or scribbled on by the kernel. */
  fullRedrawMs?: number;
  /** How often a terminal's size is asked for; a change redraws it whole. */
  sizeProbeMs?: number;
  /** The clock and elapsed times on a terminal move this often. */
  tickMs?: number;
  /** Width of plain lines where the device has no size of its own. */
  plainWidth?: number;
  now?: () => number;
  /** The terminal's size, or null when it does not say (a serial line). */
  probeSize?: (path: string) => Promise<ConsoleSize | null>;
}

const DEFAULT_SIZE: ConsoleSize = { columns: 80, rows: 24 };
const ESC = '\x1b[';

/**
 * `stty -F` opens the device non-blocking, so a serial port waiting for carrier cannot hang it,
 * and it runs in a child so a wedged device costs a timeout rather than the event loop. Node's own
 * tty handle would reopen the device with a blocking open.
 */
export const sttySize = (path: string): Promise<ConsoleSize | null> =>
  new Promise((resolve) => {
    execFile('stty', ['-F', path, 'size'], { timeout: 2000 }, (error, stdout) => {
      const match = error ? null : /^(\d+) (\d+)/.exec(stdout.trim());
      const rows = Number(match?.[1] ?? 0);
      const columns = Number(match?.[2] ?? 0);
      resolve(rows > 0 && columns > 0 ? { columns, rows } : null);
    });
  });

const isRetryable = (error: unknown): boolean => {
  const code = (error as { code?: unknown }).code;
  return code === 'EAGAIN' || code === 'EWOULDBLOCK' || code === 'EINTR';
};

interface Frame {
  data: Buffer;
  commit: () => void;
}

class ConsoleDevice {
  busy = false;
  closed = false;
  size: ConsoleSize = DEFAULT_SIZE;
  /** Whether the size may change: a terminal that reported one once. */
  sized = false;
  /** What the terminal shows, row by row; null when unknown, which makes the next frame whole. */
  shown: string[] | null = null;
  cleared = false;
  /** Plain mode: the text last printed under each key. */
  printed = new Map<string, string>();
  /** Plain mode: a partial write left a line unterminated. */
  brokenLine = false;
  /** A frame was skipped while a write was in flight; the latest state follows when it ends. */
  missed = false;
  readonly stats: DeviceStats;

  constructor(
    readonly path: string,
    readonly handle: FileHandle,
    readonly mode: ConsoleMode,
    readonly isTty: boolean,
  ) {
    this.stats = { path, mode, frames: 0, dropped: 0, bytes: 0, failed: null };
  }
}

export class StatusScreen {
  private readonly devices: ConsoleDevice[] = [];
  private readonly timers: NodeJS.Timeout[] = [];
  private flushTimer: NodeJS.Timeout | null = null;
  private lastFlush = 0;
  private stopped = false;
  private offModel: (() => void) | null = null;
  private renderFailed = false;
  private readonly now: () => number;
  private readonly minIntervalMs: number;
  private readonly plainWidth: number;
  private readonly probeSize: (path: string) => Promise<ConsoleSize | null>;

  private constructor(private readonly options: StatusScreenOptions) {
    this.now = options.now ?? Date.now;
    this.minIntervalMs = options.minIntervalMs ?? 500;
    this.plainWidth = options.plainWidth ?? 132;
    this.probeSize = options.probeSize ?? sttySize;
  }

  /** Opens every device it can; those that cannot be opened are logged once and left out. */
  static async open(options: StatusScreenOptions): Promise<StatusScreen> {
    const screen = new StatusScreen(options);
    await Promise.all(options.devices.map((path) => screen.openDevice(path)));
    screen.start();
    return screen;
  }

  get active(): boolean {
    return this.devices.some((device) => !device.closed);
  }

  stats(): DeviceStats[] {
    return this.devices.map((device) => ({ ...device.stats }));
  }

  /** Draws the final state (the agent stopping) and closes the devices. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.offModel?.();
    for (const timer of this.timers.splice(0)) clearInterval(timer);
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = null;
    await this.idle(500);
    this.flush(true);
    await this.idle(1000);
    await Promise.all(
      this.devices.map(async (device) => {
        if (device.closed) return;
        device.closed = true;
        // A close can wait for output to drain; it must not hold up the agent's exit for long.
        await Promise.race([device.handle.close().catch(() => undefined), sleep(1000)]);
      }),
    );
  }

  private async openDevice(path: string): Promise<void> {
    const { logger } = this.options;
    let handle: FileHandle;
    try {
      // O_NOCTTY: a console must never become the agent's controlling terminal (a ^C there would
      // stop it). O_NONBLOCK: neither the open (carrier) nor a write (flow control) may wait.
      // O_APPEND: a file given for testing or logging keeps what it had. No O_CREAT: a mistyped
      // device must not become a file in /dev.
      handle = await open(
        path,
        constants.O_WRONLY | constants.O_NOCTTY | constants.O_NONBLOCK | constants.O_APPEND,
      );
    } catch (error) {
      logger.warn({ device: path, error: errorMessage(error) }, 'status console cannot be opened; skipped');
      return;
    }
    const isTty = tty.isatty(handle.fd);
    const term = this.options.term ?? '';
    const mode: ConsoleMode =
      isTty && !this.options.forcePlain && term !== '' && term !== 'dumb' ? 'ansi' : 'plain';
    const device = new ConsoleDevice(path, handle, mode, isTty);
    if (isTty) await this.resize(device);
    this.devices.push(device);
    logger.info(
      { device: path, mode, tty: isTty, columns: device.size.columns, rows: device.size.rows },
      mode === 'ansi' ? 'status screen redrawn in place' : 'status screen as plain lines',
    );
  }

  private start(): void {
    if (!this.active) return;
    this.offModel = this.options.model.onChange(() => this.requestFlush());
    const every = (ms: number, action: () => void): void => {
      const timer = setInterval(action, ms);
      timer.unref();
      this.timers.push(timer);
    };
    if (this.devices.some((device) => device.mode === 'ansi')) {
      every(this.options.tickMs ?? 1000, () => this.requestFlush());
      every(this.options.fullRedrawMs ?? 10_000, () => {
        for (const device of this.devices) device.shown = null;
        this.requestFlush();
      });
      every(this.options.sizeProbeMs ?? 5000, () => {
        for (const device of this.devices) {
          if (device.mode === 'ansi' && device.sized && !device.closed) void this.resize(device);
        }
      });
    }
    this.flush(false);
  }

  private async resize(device: ConsoleDevice): Promise<void> {
    const size = await this.probeSize(device.path).catch(() => null);
    if (!size) return;
    device.sized = true;
    if (size.columns === device.size.columns && size.rows === device.size.rows) return;
    device.size = size;
    device.shown = null;
    this.requestFlush();
  }

  private requestFlush(): void {
    if (this.stopped || this.flushTimer) return;
    const wait = Math.max(0, this.lastFlush + this.minIntervalMs - this.now());
    this.flushTimer = setTimeout(() => {
      this.flushTimer = null;
      this.flush(false);
    }, wait);
    this.flushTimer.unref();
  }

  private flush(final: boolean): void {
    this.lastFlush = this.now();
    let snapshot: StatusSnapshot;
    try {
      snapshot = this.options.model.snapshot();
      for (const device of this.devices) {
        if (device.closed) continue;
        if (device.busy) {
          device.stats.dropped += 1;
          device.missed = true;
          continue;
        }
        const frame =
          device.mode === 'ansi'
            ? this.ansiFrame(device, snapshot, final)
            : this.plainFrame(device, snapshot);
        if (frame) this.write(device, frame);
      }
    } catch (error) {
      // A drawing bug costs the screen, never the agent; said once, not twice a second.
      if (!this.renderFailed) {
        this.renderFailed = true;
        this.options.logger.error({ err: error }, 'status screen could not be drawn');
      }
    }
  }

  private ansiFrame(device: ConsoleDevice, snapshot: StatusSnapshot, final: boolean): Frame | null {
    const { columns, rows } = device.size;
    // One column kept back: a character in the last column leaves some terminals about to wrap.
    const lines = renderScreen(
      snapshot,
      { width: Math.max(20, columns - 1), height: Math.max(4, rows) },
      this.now(),
    );
    const shown = device.shown;
    let text = '';
    if (shown === null) {
      text = `${device.cleared ? '' : `${ESC}2J`}${ESC}?25l${ESC}H${lines.map((line) => `${line}${ESC}K`).join('\r\n')}${ESC}J`;
    } else {
      lines.forEach((line, index) => {
        if (shown[index] !== line) text += `${ESC}${index + 1};1H${line}${ESC}K`;
      });
      if (lines.length < shown.length) text += `${ESC}${lines.length + 1};1H${ESC}J`;
    }
    // Leaving for good: the cursor back, below the screen, for whatever uses the console next.
    if (final) text += `${ESC}${Math.min(rows, lines.length + 1)};1H${ESC}?25h`;
    if (text === '') return null;
    return {
      data: Buffer.from(text),
      commit: () => {
        device.shown = lines;
        device.cleared = true;
      },
    };
  }

  private plainFrame(device: ConsoleDevice, snapshot: StatusSnapshot): Frame | null {
    const width = device.isTty && device.sized ? Math.max(20, device.size.columns - 1) : this.plainWidth;
    const lines = renderPlain(snapshot, width);
    const changed = lines.filter((line) => device.printed.get(line.key) !== line.text);
    if (changed.length === 0) return null;
    const newline = device.isTty ? '\r\n' : '\n';
    const prefix = plainPrefix(this.now());
    const text = `${device.brokenLine ? newline : ''}${changed.map((line) => `${prefix}${line.text}${newline}`).join('')}`;
    return {
      data: Buffer.from(text),
      commit: () => {
        device.brokenLine = false;
        // Only the keys still shown are remembered, so the map stays as small as the screen.
        device.printed = new Map(lines.map((line) => [line.key, line.text]));
      },
    };
  }

  private write(device: ConsoleDevice, frame: Frame): void {
    device.busy = true;
    device.handle.write(frame.data).then(
      ({ bytesWritten }) => {
        device.busy = false;
        device.stats.bytes += bytesWritten;
        if (bytesWritten === frame.data.length) {
          device.stats.frames += 1;
          frame.commit();
          if (device.missed) {
            device.missed = false;
            this.requestFlush();
          }
          return;
        }
        // Part of a frame made it: the screen is in an unknown state, so the next frame is whole.
        device.stats.dropped += 1;
        device.shown = null;
        device.brokenLine = bytesWritten > 0;
        this.requestFlush();
      },
      (error: unknown) => {
        device.busy = false;
        if (isRetryable(error)) {
          // Full (flow control, nobody reading): this frame is lost, the next one says it all.
          device.stats.dropped += 1;
          this.requestFlush();
          return;
        }
        this.fail(device, error);
      },
    );
  }

  private fail(device: ConsoleDevice, error: unknown): void {
    if (device.closed) return;
    device.closed = true;
    device.stats.failed = errorMessage(error);
    void device.handle.close().catch(() => undefined);
    this.options.logger.warn(
      { device: device.path, error: device.stats.failed },
      'status console failed; no longer drawn on',
    );
  }

  private async idle(timeoutMs: number): Promise<void> {
    const deadline = this.now() + timeoutMs;
    while (this.devices.some((device) => device.busy && !device.closed) && this.now() < deadline) {
      await sleep(10);
    }
  }
}

const sleep = (ms: number): Promise<void> =>
  new Promise((resolve) => {
    setTimeout(resolve, ms).unref();
  });

/** Every address but loopback and IPv6 link-local, as `eth0 10.0.0.5/24`. */
export const listAddresses = (): string[] =>
  Object.entries(os.networkInterfaces()).flatMap(([name, entries]) =>
    (entries ?? [])
      .filter((entry) => !entry.internal && !(entry.family === 'IPv6' && /^fe[89ab]/i.test(entry.address)))
      .map((entry) => `${name} ${entry.cidr ?? entry.address}`),
  );

export const readIdentityView = async (paths: HardwarePaths): Promise<Partial<IdentityView>> => {
  const [identity, vendor] = await Promise.all([readIdentity(paths), collectSystemVendor(paths)]);
  return {
    hostname: identity.hostname,
    vendor: vendor.manufacturer,
    product: vendor.product_name,
    serial: vendor.serial_number,
    addresses: listAddresses(),
  };
};

export interface StatusConsoleDeps {
  devices: string[];
  forcePlain: boolean;
  conductorUrl: string | null;
  bootif: string | null;
  agentVersion: string;
  paths: HardwarePaths;
  link?: LinkSource;
  commands: CommandSource;
  logs: LogSource;
  logger: Logger;
  term?: string | undefined;
  /** How often the IP addresses are read again (DHCP may finish after the agent starts). */
  addressRefreshMs?: number;
  screen?: Partial<Omit<StatusScreenOptions, 'devices' | 'forcePlain' | 'term' | 'model' | 'logger'>>;
}

export interface StatusConsole {
  model: StatusModel;
  /** The screen once its devices are open; null when none could be. */
  screen: Promise<StatusScreen | null>;
  stop(): Promise<void>;
}

/**
 * The daemon's status console: the model fed from the channel, the engine and the log, drawn on
 * the configured devices. The model listens at once, so nothing the agent does from its first
 * moment is missed; the devices open in the background, so the channel never waits for a console.
 */
export const startStatusConsole = (deps: StatusConsoleDeps): StatusConsole => {
  const { logger } = deps;
  const model = new StatusModel({
    agentVersion: deps.agentVersion,
    conductorUrl: deps.conductorUrl,
    bootif: deps.bootif,
  });
  const detach = model.attach({
    ...(deps.link ? { link: deps.link } : {}),
    commands: deps.commands,
    logs: deps.logs,
  });
  model.setIdentity({ hostname: os.hostname(), addresses: listAddresses() });
  let refresh: NodeJS.Timeout | null = null;
  const screen = StatusScreen.open({
    ...deps.screen,
    devices: deps.devices,
    forcePlain: deps.forcePlain,
    term: deps.term,
    model,
    logger,
  }).then(
    async (opened) => {
      if (!opened.active) {
        await opened.stop();
        detach();
        return null;
      }
      readIdentityView(deps.paths).then(
        (identity) => model.setIdentity(identity),
        (error: unknown) => logger.warn({ err: error }, 'status screen: node identity not read'),
      );
      refresh = setInterval(
        () => model.setIdentity({ addresses: listAddresses() }),
        deps.addressRefreshMs ?? 10_000,
      );
      refresh.unref();
      return opened;
    },
    (error: unknown) => {
      detach();
      logger.error({ err: error }, 'status screen could not start; the agent carries on without it');
      return null;
    },
  );
  return {
    model,
    screen,
    async stop() {
      const opened = await screen;
      if (refresh) clearInterval(refresh);
      await opened?.stop();
      detach();
    },
  };
};
