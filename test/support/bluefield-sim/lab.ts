/**
 * A host with simulated BlueField cards, for tests and the demo. Everything lives under one temp
 * directory (the lab root): a sysfs tree (PCI functions, VPD, netdevs, tmfifo TAPs), a /dev tree
 * whose /dev/rshimN directories belong to one simulated rshim daemon process per card, each
 * card's DPU root file system (what the installer writes and bf.cfg's bfb_modify_os sees as
 * /mnt), a bin directory for fake tools and a state directory shared with them. Nothing here
 * touches the machine's own /sys or /dev; close() kills every process the lab started and
 * removes the root.
 *
 *   const lab = await createBlueFieldLab({ cards: [{ generation: 'BF3' }] });
 *   // point the agent at lab.paths; stream into `${lab.card(0).rshimPath}/boot`
 *   const got = await lab.card(0).waitForSession();
 *   await lab.close();
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { mkdir, mkdtemp, readlink, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type { HardwarePaths } from '../../../agent/hardware/paths.js';
import type {
  DpuPhase,
  FaultName,
  LoggedLine,
  MiscCommand,
  ReceivedStream,
  RshimSimConfig,
  SimFaults,
  SimMode,
  SimCall,
  SimResponse,
  SimState,
} from './rshim-sim.js';
import {
  GENERATION_IDS,
  hostFunctions,
  layoutBlueField,
  layoutConnectX,
  writeFunctions,
  writeLoopback,
  writeTmfifoNetdev,
  type BlueFieldLayout,
  type RshimFunctionNumber,
  type SimGeneration,
  type VpdInfo,
} from './sysfs.js';

export type { FaultName, ReceivedStream, SimFaults, SimMode, SimState, SimGeneration, DpuPhase };

const SIM_MAIN = fileURLToPath(new URL('./rshim-sim-main.js', import.meta.url));
/** Tests run from dist*\/test/support/bluefield-sim; the fixtures stay in the source tree. */
export const SIM_FIXTURES = fileURLToPath(
  new URL('../../../../test/fixtures/bluefield/sim/', import.meta.url),
);

const DEFAULT_SLOTS = ['0000:03:00', '0000:17:00', '0000:a3:00', '0000:ca:00', '0000:e2:00', '0000:81:00'];
const DEFAULT_INSTALLED = 'bf-bundle-2.7.0-33_24.04_ubuntu-22.04_prod';
/** About 1.3 s for a whole BF3 install with bf.cfg; the timelines hold roughly 400 s of DPU time. */
export const DEFAULT_SPEED = 300;
/**
 * The installer's lines stay readable this long before the reboot clears the ring: enough for a
 * host that polls misc every second (bfb-install's pace).
 */
export const DEFAULT_REBOOT_PAUSE_MS = 1500;
/** The rshim log ring: 0x7f words (mlxbf-bootctl RSH_SCRATCH_BUF_CTL_IDX_MAX). */
export const RSHIM_LOG_WORDS = 127;

export type CardMode = SimMode | 'livefish';

export interface LabCardOptions {
  generation: SimGeneration;
  /** `dddd:bb:dd`; one of a fixed list by default. */
  slot?: string;
  /** N of /dev/rshimN; the next free number by default. */
  rshimIndex?: number;
  /** Where the rshim function sits: .2 (usual), .3 behind a c2d1 channel, .1 with one PF. */
  rshimFunction?: RshimFunctionNumber;
  /** `separated_host` hides the rshim; `livefish` leaves only the flash-recovery function. */
  mode?: CardMode;
  /** Whether the host has an rshim for the card (function and daemon); default: not in separated_host. */
  rshim?: boolean;
  linkType?: 'eth' | 'ib';
  /** SR-IOV VFs of PF0. */
  vfs?: number;
  faults?: SimFaults;
  /** BOOT_TIMEOUT in seconds (the daemon's default is 300). */
  bootTimeout?: number;
  displayLevel?: 0 | 1 | 2;
  legacyDaemon?: boolean;
  /** Start with `Linux up` / `DPU is ready` of an earlier install in the log ring. */
  staleReady?: boolean;
  /** What the DPU's eMMC holds at start; null for nothing. */
  installed?: string | null;
  /** Bytes per second the DPU takes from boot; unlimited by default. */
  rate?: number | null;
  speed?: number;
  /** Log ring size in words; null for unbounded. */
  logWords?: number | null;
  /** Real ms between the installer's `Rebooting...` and the reset that restarts the log ring. */
  rebootPauseMs?: number;
  serial?: string;
  partNumber?: string;
  description?: string;
  opn?: string;
}

export interface BlueFieldLabOptions {
  cards: LabCardOptions[];
  /** Plain ConnectX-6 Dx NICs to add (Mellanox, mlx5_core, but no BlueField). */
  connectx?: number;
  /** Defaults for every card. */
  speed?: number;
  rate?: number | null;
  logWords?: number | null;
  rebootPauseMs?: number;
  /** Writes fake tools into binDir; stateDir/lab.json describes the cards. */
  installTools?: (binDir: string, stateDir: string) => Promise<void>;
  /**
   * Runs at a card's power cycle before the DPU restarts (where fake tools promote next-boot
   * settings); may return the mode the card comes up in.
   */
  onPowerCycle?: (card: LabCard, stateDir: string) => Promise<SimMode | void> | SimMode | void;
}

export interface CardFunctions {
  nic: string[];
  rshim: string | null;
  aux: string | null;
  vfs: string[];
  livefish: string | null;
}

export interface LabCard {
  index: number;
  generation: SimGeneration;
  mode: CardMode;
  slot: string;
  bdfs: CardFunctions;
  netdevs: string[];
  macs: string[];
  vpd: VpdInfo | null;
  rshimIndex: number | null;
  /** `<dev>/rshimN`, or null when the host has no rshim for the card. */
  rshimPath: string | null;
  /** misc DEV_NAME. */
  devName: string | null;
  tmfifo: string | null;
  /** The DPU's root file system (the installer's /mnt). */
  dpuRoot: string;
  setFault(name: FaultName, value: boolean | number): Promise<void>;
  /** The latest boot-stream session, or null before any. */
  received(): Promise<ReceivedStream | null>;
  sessions(): Promise<ReceivedStream[]>;
  /** Every line the DPU logged, in order, including any the full ring dropped. */
  logLines(): Promise<string[]>;
  logEntries(): Promise<LoggedLine[]>;
  commands(): Promise<MiscCommand[]>;
  state(): Promise<SimState>;
  /** misc as a read would return it now. */
  misc(): Promise<string>;
  /**
   * Waits for a logged line matching `pattern` among the lines from index `from` of logLines()
   * (0 by default: the whole history, so a line logged before the call still counts).
   */
  waitForLog(pattern: RegExp | string, options?: { from?: number; timeoutMs?: number }): Promise<string>;
  /** Waits for a finished session numbered above `after` (default: the count when called). */
  waitForSession(options?: { after?: number; timeoutMs?: number }): Promise<ReceivedStream>;
  waitForPhase(phases: DpuPhase | DpuPhase[], timeoutMs?: number): Promise<SimState>;
  powerCycle(): Promise<void>;
  setMode(mode: SimMode): Promise<void>;
  /** PID of the process the busy fault started, or null. */
  holderPid(): number | null;
}

export interface BlueFieldLab {
  root: string;
  paths: Required<HardwarePaths>;
  binDir: string;
  stateDir: string;
  cards: LabCard[];
  card(index: number): LabCard;
  connectx: BlueFieldLayout[];
  /** Power-cycles every card. */
  powerCycle(): Promise<void>;
  close(): Promise<void>;
}

/* ---------------------------------------------------------------- the child process */

class SimProcess {
  readonly child: ChildProcess;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private stderr = '';
  readonly ready: Promise<void>;
  readonly exited: Promise<void>;

  constructor(configFile: string) {
    this.child = spawn(process.execPath, [SIM_MAIN, configFile], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderr = (this.stderr + chunk).slice(-16384);
    });
    let markReady: () => void = () => {};
    let failReady: (error: Error) => void = () => {};
    this.ready = new Promise<void>((resolve, reject) => {
      markReady = resolve;
      failReady = reject;
    });
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      let message: SimResponse;
      try {
        message = JSON.parse(line) as SimResponse;
      } catch {
        return;
      }
      if ('event' in message) {
        if (message.event === 'ready') markReady();
        else failReady(new Error(`rshim simulator failed to start: ${message.error}`));
        return;
      }
      const waiter = this.pending.get(message.id);
      if (!waiter) return;
      this.pending.delete(message.id);
      if (message.ok) waiter.resolve(message.result);
      else waiter.reject(new Error(message.error));
    });
    this.exited = new Promise<void>((resolve) => {
      this.child.on('exit', (code, signal) => {
        const error = new Error(
          `rshim simulator exited (${signal ?? code})${this.stderr ? `: ${this.stderr.trim()}` : ''}`,
        );
        failReady(error);
        for (const waiter of this.pending.values()) waiter.reject(error);
        this.pending.clear();
        resolve();
      });
    });
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  request<T>(request: SimCall): Promise<T> {
    if (!this.alive) return Promise.reject(new Error('rshim simulator is not running'));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.child.stdin?.write(`${JSON.stringify({ ...request, id })}\n`);
    });
  }

  async stop(): Promise<void> {
    if (!this.alive) return;
    this.request({ op: 'shutdown' }).catch(() => {});
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 3000);
    await this.exited;
    clearTimeout(timer);
  }
}

/* ---------------------------------------------------------------- the lab */

/** Labs not closed yet: if the test process exits first, their processes are killed with it. */
const openLabs = new Set<() => void>();
let exitHookInstalled = false;
const killOnExit = (kill: () => void): void => {
  openLabs.add(kill);
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const killLab of openLabs) killLab();
  });
};

const waitUntil = async <T>(
  probe: () => Promise<T | null | undefined | false>,
  timeoutMs: number,
  what: string,
): Promise<T> => {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(25);
  }
};

const writeJson = (file: string, value: unknown): Promise<void> =>
  writeFile(file, `${JSON.stringify(value, null, 2)}\n`);

export const createBlueFieldLab = async (options: BlueFieldLabOptions): Promise<BlueFieldLab> => {
  const root = await mkdtemp(path.join(os.tmpdir(), 'bf-lab-'));
  const paths: Required<HardwarePaths> = {
    sys: path.join(root, 'sys'),
    dev: path.join(root, 'dev'),
    proc: '/proc',
    run: path.join(root, 'run'),
  };
  const binDir = path.join(root, 'bin');
  const stateDir = path.join(root, 'state');
  const processes: SimProcess[] = [];
  const holders = new Map<number, ChildProcess>();
  let closing: Promise<void> | null = null;

  const killAll = (): void => {
    for (const holder of holders.values()) holder.kill('SIGKILL');
    for (const sim of processes) sim.child.kill('SIGKILL');
    try {
      fs.rmSync(root, { recursive: true, force: true });
    } catch {
      // A simulator still dying may hold a file for a moment; the temp dir is all that is left.
    }
  };
  killOnExit(killAll);

  const close = (): Promise<void> =>
    (closing ??= (async () => {
      openLabs.delete(killAll);
      for (const holder of holders.values()) holder.kill('SIGKILL');
      holders.clear();
      await Promise.all(processes.map((sim) => sim.stop()));
      await rm(root, { recursive: true, force: true });
    })());

  try {
    await Promise.all(
      [paths.sys, paths.dev, path.join(paths.run, 'udev', 'data'), binDir, stateDir].map((dir) =>
        mkdir(dir, { recursive: true }),
      ),
    );

    // Lay the cards out: PCI functions, netdev names and ifindexes, rshim numbers.
    let ifindex = 2;
    const usedIndexes = new Set(
      options.cards.flatMap((card) => (card.rshimIndex === undefined ? [] : [card.rshimIndex])),
    );
    let nextIndex = 0;
    const resolved = options.cards.map((card, index) => {
      const mode: CardMode = card.mode ?? 'dpu';
      const hasRshim = card.rshim ?? mode !== 'separated_host';
      const layout = layoutBlueField({
        generation: card.generation,
        slot: card.slot ?? DEFAULT_SLOTS[index] ?? `0000:${(0x30 + index).toString(16)}:00`,
        cardIndex: index,
        rshimFunction: card.rshimFunction ?? 2,
        rshim: hasRshim && mode !== 'livefish',
        livefish: mode === 'livefish',
        linkType: card.linkType ?? 'eth',
        vfs: card.vfs ?? 0,
        ifindexBase: ifindex,
        ...(card.serial ? { serial: card.serial } : {}),
        ...(card.partNumber ? { partNumber: card.partNumber } : {}),
        ...(card.description ? { description: card.description } : {}),
      });
      ifindex += layout.functions.filter((fn) => fn.netdev).length;
      let rshimIndex: number | null = null;
      if (hasRshim) {
        if (card.rshimIndex !== undefined) rshimIndex = card.rshimIndex;
        else {
          while (usedIndexes.has(nextIndex)) nextIndex += 1;
          rshimIndex = nextIndex;
          usedIndexes.add(nextIndex);
        }
      }
      return { options: card, index, mode, layout, rshimIndex };
    });
    const seen = new Set<string>();
    for (const card of resolved) {
      const keys = [
        `slot ${card.layout.slot}`,
        ...(card.rshimIndex === null ? [] : [`rshim${card.rshimIndex}`]),
      ];
      for (const key of keys) {
        if (seen.has(key)) throw new Error(`two cards of the lab share ${key}`);
        seen.add(key);
      }
    }
    const connectx = Array.from({ length: options.connectx ?? 0 }, (_, index) => {
      const layout = layoutConnectX(`0000:${(0x98 + index).toString(16)}:00`, index, ifindex);
      ifindex += 2;
      return layout;
    });

    await writeFunctions(paths.sys, hostFunctions());
    for (const card of resolved) await writeFunctions(paths.sys, card.layout.functions);
    for (const layout of connectx) await writeFunctions(paths.sys, layout.functions);
    await writeLoopback(paths.sys);

    const cards: LabCard[] = [];
    const configs = new Map<number, RshimSimConfig>();
    for (const card of resolved) {
      const dpuRoot = path.join(root, `dpu-${card.index}`, 'root');
      const installed = card.options.installed === undefined ? DEFAULT_INSTALLED : card.options.installed;
      await mkdir(path.join(dpuRoot, 'etc'), { recursive: true });
      if (installed !== null && card.mode !== 'livefish')
        await writeFile(path.join(dpuRoot, 'etc', 'mlnx-release'), `${installed}\n`);
      const rshimFn = card.layout.rshim ?? card.layout.livefish;
      const devName =
        card.rshimIndex === null || rshimFn === null
          ? null
          : `${card.mode === 'livefish' ? 'pcie-lf-' : 'pcie-'}${rshimFn}`;
      let tmfifo: string | null = null;
      if (card.rshimIndex !== null) tmfifo = await writeTmfifoNetdev(paths.sys, card.rshimIndex, ifindex++);
      const rshimPath = card.rshimIndex === null ? null : path.join(paths.dev, `rshim${card.rshimIndex}`);
      if (card.rshimIndex !== null && devName !== null && rshimPath !== null) {
        const faults = { ...(card.options.faults ?? {}) };
        if (faults.locked && card.options.generation !== 'BF3')
          throw new Error(`card ${card.index}: secure NIC mode (locked) exists on BlueField-3 only`);
        configs.set(card.index, {
          index: card.rshimIndex,
          devDir: rshimPath,
          stateDir,
          dpuRoot,
          generation: card.options.generation,
          devName,
          revision: GENERATION_IDS[card.options.generation].revision,
          opn: card.options.opn ?? GENERATION_IDS[card.options.generation].opn,
          mode: card.mode === 'livefish' ? 'dpu' : card.mode,
          timelineFile: path.join(SIM_FIXTURES, `timeline-${card.options.generation.toLowerCase()}.tsv`),
          faults,
          bootTimeout: card.options.bootTimeout ?? 300,
          displayLevel: card.options.displayLevel ?? 0,
          legacyDaemon: card.options.legacyDaemon ?? false,
          staleReady: card.options.staleReady ?? false,
          installed: card.mode === 'livefish' ? null : installed,
          rate: card.options.rate ?? options.rate ?? null,
          speed: card.options.speed ?? options.speed ?? DEFAULT_SPEED,
          logWords:
            card.options.logWords !== undefined
              ? card.options.logWords
              : options.logWords !== undefined
                ? options.logWords
                : RSHIM_LOG_WORDS,
          rebootPauseMs: card.options.rebootPauseMs ?? options.rebootPauseMs ?? DEFAULT_REBOOT_PAUSE_MS,
          upTime: 179752 + card.index * 1000,
        });
      }
      cards.push(
        makeCard({
          index: card.index,
          generation: card.options.generation,
          mode: card.mode,
          layout: card.layout,
          rshimIndex: card.rshimIndex,
          rshimPath,
          devName,
          tmfifo,
          dpuRoot,
        }),
      );
    }

    await writeJson(path.join(stateDir, 'lab.json'), {
      root,
      paths,
      cards: cards.map((card) => ({
        index: card.index,
        generation: card.generation,
        mode: card.mode,
        slot: card.slot,
        bdfs: card.bdfs,
        netdevs: card.netdevs,
        macs: card.macs,
        rshimIndex: card.rshimIndex,
        rshimPath: card.rshimPath,
        devName: card.devName,
        tmfifo: card.tmfifo,
        dpuRoot: card.dpuRoot,
        serial: card.vpd?.serial ?? null,
        partNumber: card.vpd?.partNumber ?? null,
        description: card.vpd?.id ?? null,
      })),
      connectx: connectx.map((layout) => ({ slot: layout.slot, bdfs: layout.nic, netdevs: layout.netdevs })),
    });
    if (options.installTools) await options.installTools(binDir, stateDir);

    const sims = new Map<number, SimProcess>();
    for (const [index, config] of configs) {
      const file = path.join(stateDir, `rshim${config.index}.json`);
      await writeJson(file, config);
      const sim = new SimProcess(file);
      processes.push(sim);
      sims.set(index, sim);
    }
    await Promise.all([...sims.values()].map((sim) => sim.ready));

    function makeCard(spec: {
      index: number;
      generation: SimGeneration;
      mode: CardMode;
      layout: BlueFieldLayout;
      rshimIndex: number | null;
      rshimPath: string | null;
      devName: string | null;
      tmfifo: string | null;
      dpuRoot: string;
    }): LabCard {
      const sim = (): SimProcess => {
        const found = sims.get(spec.index);
        if (!found) throw new Error(`card ${spec.index} has no rshim on this host`);
        return found;
      };
      const ask = <T>(request: SimCall): Promise<T> => sim().request<T>(request);

      const startHolder = async (): Promise<void> => {
        if (holders.has(spec.index) || !spec.rshimPath) return;
        const boot = path.join(spec.rshimPath, 'boot');
        // A stale `cat ... > boot`: holds the device open for writing and never writes. Opened
        // without blocking, so a moment without the daemon's reader is retried, not waited on.
        const fd = await waitUntil(
          async () => {
            try {
              return fs.openSync(boot, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
            } catch {
              return null;
            }
          },
          2000,
          `a reader on ${boot}`,
        );
        let holder: ChildProcess;
        try {
          holder = spawn('cat', [], { stdio: ['pipe', fd, 'ignore'] });
        } finally {
          fs.closeSync(fd);
        }
        holders.set(spec.index, holder);
        holder.on('exit', () => {
          if (holders.get(spec.index) === holder) holders.delete(spec.index);
        });
        await waitUntil(
          async () => {
            try {
              return (await readlink(`/proc/${holder.pid}/fd/1`)) === boot;
            } catch {
              return false;
            }
          },
          2000,
          'the busy holder to open boot',
        );
      };
      const stopHolder = async (): Promise<void> => {
        const holder = holders.get(spec.index);
        if (!holder) return;
        holders.delete(spec.index);
        const exited = new Promise((resolve) => holder.once('exit', resolve));
        holder.kill('SIGTERM');
        await exited;
      };

      const card: LabCard = {
        index: spec.index,
        generation: spec.generation,
        mode: spec.mode,
        slot: spec.layout.slot,
        bdfs: {
          nic: spec.layout.nic,
          rshim: spec.layout.rshim,
          aux: spec.layout.aux,
          vfs: spec.layout.vfs,
          livefish: spec.layout.livefish,
        },
        netdevs: spec.layout.netdevs,
        macs: spec.layout.macs,
        vpd: spec.layout.vpd,
        rshimIndex: spec.rshimIndex,
        rshimPath: spec.rshimPath,
        devName: spec.devName,
        tmfifo: spec.tmfifo,
        dpuRoot: spec.dpuRoot,
        async setFault(name, value) {
          if (name === 'busy' && !value) await stopHolder();
          await ask({ op: 'setFault', name, value });
          if (name === 'busy' && value) await startHolder();
        },
        received: () => ask({ op: 'received' }),
        sessions: () => ask({ op: 'sessions' }),
        logEntries: () => ask({ op: 'logLines' }),
        logLines: async () => (await ask<LoggedLine[]>({ op: 'logLines' })).map((entry) => entry.line),
        commands: () => ask({ op: 'commands' }),
        state: () => ask({ op: 'state' }),
        misc: () => ask({ op: 'misc' }),
        waitForLog: (pattern, { from = 0, timeoutMs = 10_000 } = {}) =>
          waitUntil(
            async () =>
              (await card.logLines())
                .slice(from)
                .find((line) => (typeof pattern === 'string' ? line.includes(pattern) : pattern.test(line))),
            timeoutMs,
            `log line ${String(pattern)} on card ${spec.index}`,
          ),
        async waitForSession({ after, timeoutMs = 10_000 } = {}) {
          const floor = after ?? (await card.sessions()).length;
          return waitUntil(
            async () => {
              const sessions = await card.sessions();
              return sessions.find((s) => s.session > floor && s.endedAt !== null);
            },
            timeoutMs,
            `a boot stream on card ${spec.index}`,
          );
        },
        waitForPhase: (phases, timeoutMs = 10_000) => {
          const wanted = Array.isArray(phases) ? phases : [phases];
          return waitUntil(
            async () => {
              const state = await card.state();
              return wanted.includes(state.phase) ? state : null;
            },
            timeoutMs,
            `phase ${wanted.join('|')} on card ${spec.index}`,
          );
        },
        async powerCycle() {
          // The host goes down with the card: a process holding boot is gone afterwards.
          if (holders.has(spec.index)) {
            await stopHolder();
            if (sims.has(spec.index)) await ask({ op: 'setFault', name: 'busy', value: false });
          }
          const mode = (await options.onPowerCycle?.(card, stateDir)) ?? undefined;
          if (sims.has(spec.index)) await ask({ op: 'powerCycle', ...(mode ? { mode } : {}) });
        },
        async setMode(mode) {
          await ask({ op: 'setMode', mode });
        },
        holderPid: () => holders.get(spec.index)?.pid ?? null,
      };
      return card;
    }

    for (const card of cards) {
      if (configs.get(card.index)?.faults.busy) await card.setFault('busy', true);
    }

    return {
      root,
      paths,
      binDir,
      stateDir,
      cards,
      card(index) {
        const card = cards[index];
        if (!card) throw new RangeError(`the lab has no card ${index}`);
        return card;
      },
      connectx,
      async powerCycle() {
        await Promise.all(cards.map((card) => card.powerCycle()));
      },
      close,
    };
  } catch (error) {
    await close();
    throw error;
  }
};
