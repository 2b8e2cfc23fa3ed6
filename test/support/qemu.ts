/**
 * Boots the ramdisk in qemu-system-x86_64 without KVM, for the end-to-end test, the boot-time
 * benchmark and the demo. See ../shared/reference/qemu-pxe-notes.md for the measurements behind
 * the settings.
 *
 * Network containment: the guest's only network is slirp with restrict=on, so its one way out is
 * a guestfwd to 10.0.2.100, where each guest connection starts a relay (qemu-relay.ts) to one
 * service on the host's 127.0.0.1: port 80 the BootServer (boot script, kernel, initramfs, disk
 * images), port 8080 the conductor (when there is one), and any `guestForwards`; `hostForwards`
 * open ports on the host's 127.0.0.1 into the guest (IPA's agent API, which Ironic calls). slirp's
 * own DHCP and TFTP still answer. A second NIC is a `-netdev dgram` on 127.0.0.1 UDP that carries
 * nothing but the Ethernet frames the test sends into it (LLDP).
 *
 * Boot modes: `pxe` is the real thing (SeaBIOS, the iPXE ROM of Debian's ipxe-qemu, the script
 * over TFTP or HTTP, then the bzImage and the initramfs over HTTP); `direct` hands QEMU the
 * uncompressed vmlinux (PVH entry: no in-guest kernel decompression) and the initramfs.
 *
 * The serial console is QEMU's stdout, read line by line and stamped with host time, and written
 * to console.log in the run directory with those stamps. Phases are timed from it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { once } from 'node:events';
import { createWriteStream, existsSync, readdirSync, readFileSync, type WriteStream } from 'node:fs';
import { access, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { findOnPath } from '../../agent/util/run-process.js';
import type { BootServer, BootRequest } from './boot-server.js';
import type { HelloRecord, ReferenceConductor } from './conductor.js';

export const QEMU_BINARY = 'qemu-system-x86_64';
/** Debian's ipxe-qemu: the combined BIOS + EFI iPXE ROM QEMU loads for virtio-net by default. */
export const IPXE_ROM = '/usr/lib/ipxe/qemu/efi-virtio.rom';

/** Where the guest finds the host's services (on-link in slirp's 10.0.2.0/24). */
export const GUEST_SERVICE_HOST = '10.0.2.100';
export const GUEST_HTTP_PORT = 80;
export const GUEST_CONDUCTOR_PORT = 8080;

export const DEFAULT_MACS: readonly [string, string] = ['52:54:00:e2:e0:01', '52:54:00:e2:e0:02'];

/** A port on 10.0.2.100 whose guest connections are relayed to a service on the host's 127.0.0.1. */
export interface GuestForward {
  guestPort: number;
  hostPort: number;
}

/** A port on the host's 127.0.0.1 forwarded to a port the guest listens on (its DHCP address). */
export interface HostForward {
  hostPort: number;
  guestPort: number;
}

const RELAY_SCRIPT = fileURLToPath(new URL('./qemu-relay.js', import.meta.url));

/** The repository root: the nearest folder above this file that holds package.json. */
const repoRoot = (): string => {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json'))) {
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error('package.json not found above the test support folder');
    dir = parent;
  }
  return dir;
};

/** `make ramdisk`'s output; BMA_RAMDISK_DIR points elsewhere (e.g. a cached build). */
export const ramdiskDir = (): string =>
  process.env.BMA_RAMDISK_DIR ?? path.join(repoRoot(), 'build', 'ramdisk');

/** Where console logs of e2e boots are kept after their run folder is gone (build/ is not committed). */
export const e2eLogDir = (): string => process.env.BMA_E2E_LOG_DIR ?? path.join(repoRoot(), 'build', 'e2e');

export interface RamdiskArtefacts {
  dir: string;
  /** bzImage, what iPXE loads. */
  vmlinuz: string;
  /** The uncompressed ELF with its PVH note, for direct boots; null when the build made none. */
  vmlinux: string | null;
  initramfs: string;
  /** The build's own iPXE script, for reference; the harness writes its own with the test's arguments. */
  bootScript: string | null;
  manifest: Record<string, unknown>;
}

export const loadRamdisk = async (dir = ramdiskDir()): Promise<RamdiskArtefacts> => {
  const file = (name: string): string => path.join(dir, name);
  const manifest = JSON.parse(await readFile(file('manifest.json'), 'utf8')) as Record<string, unknown>;
  for (const name of ['vmlinuz', 'initramfs.img']) await access(file(name));
  return {
    dir,
    vmlinuz: file('vmlinuz'),
    vmlinux: existsSync(file('vmlinux')) ? file('vmlinux') : null,
    initramfs: file('initramfs.img'),
    bootScript: existsSync(file('boot.ipxe')) ? file('boot.ipxe') : null,
    manifest,
  };
};

/** Why a VM cannot be booted here, or null when it can. */
export const qemuSkipReason = async (mode: BootMode | 'any' = 'any'): Promise<string | null> => {
  const PATH = `${process.env.PATH ?? ''}:/usr/sbin:/sbin`;
  if ((await findOnPath(QEMU_BINARY, PATH)) === null)
    return `${QEMU_BINARY} is not installed (Debian: qemu-system-x86; \`make e2e\` installs it)`;
  if (mode !== 'direct' && !existsSync(IPXE_ROM)) return `${IPXE_ROM} is missing (Debian: ipxe-qemu)`;
  const dir = ramdiskDir();
  try {
    const ramdisk = await loadRamdisk(dir);
    if (mode === 'direct' && ramdisk.vmlinux === null) return `${dir}/vmlinux is missing`;
  } catch (error) {
    return `no ramdisk build in ${dir} (run \`make ramdisk\`, or \`make e2e\` which builds it): ${
      error instanceof Error ? error.message : String(error)
    }`;
  }
  return null;
};

export type BootMode = 'pxe' | 'direct';

export interface VmOptions {
  mode: BootMode;
  ramdisk: RamdiskArtefacts;
  /** Holds console.log, the boot script and the TFTP root; the caller owns and removes it. */
  runDir: string;
  /** The HTTP server the guest reaches at 10.0.2.100:80; the VM publishes the boot files on it. */
  boot: BootServer;
  /**
   * The conductor's port on 127.0.0.1 and its WebSocket path; the guest dials 10.0.2.100:8080.
   * null: no conductor URL and no relay on 8080 (an IPA-mode boot names Ironic in `kernelArgs`).
   */
  conductor: { port: number; path: string } | null;
  /** More relays from 10.0.2.100 to the host's 127.0.0.1 (e.g. Ironic's API). */
  guestForwards?: readonly GuestForward[];
  /** Ports on the host's 127.0.0.1 that reach the guest (e.g. the agent API Ironic calls). */
  hostForwards?: readonly HostForward[];
  /**
   * Kernel arguments after the harness's own (conductor URL, BOOTIF, console); later ones win.
   * BMA_QEMU_KERNEL_ARGS (space-separated) comes last, for debugging a run (`bma-init-debug=1`).
   */
  kernelArgs?: string[];
  /** A raw disk image attached as virtio-blk (the guest's vda). */
  disk?: { file: string; serial?: string };
  macs?: readonly [string, string];
  /** A second NIC on `-netdev dgram`, for LLDP frames; on by default. */
  lldpNic?: boolean;
  cpus?: number;
  memoryMiB?: number;
  /** How iPXE gets the boot script; the kernel and initramfs always come over HTTP. */
  pxeScript?: 'tftp' | 'http';
  /** Every console line as it arrives (e.g. to echo it). */
  onLine?: (line: ConsoleLine) => void;
}

export interface ConsoleLine {
  /** Host milliseconds since QEMU was started. */
  at: number;
  text: string;
}

/**
 * Console patterns that mark a phase; the first matching line after `after` wins. The init and
 * agent lines are image-build's (`bm-agent-init: ...`), with the kernel's own as a fallback.
 */
const CONSOLE_PHASES: ReadonlyArray<{ name: string; pattern: RegExp; after?: string }> = [
  { name: 'firmware', pattern: /SeaBIOS \(version/ },
  // SeaBIOS initialises the ROM during POST; this is where it hands the boot over to it.
  { name: 'ipxe', pattern: /iPXE .*starting execution/ },
  { name: 'ipxe-dhcp', pattern: /Configuring \(net0 .*ok/ },
  { name: 'script', pattern: /boot\.ipxe\.\.\. ok/ },
  { name: 'kernel', pattern: /Linux version \d/ },
  { name: 'init', pattern: /Run \/init as init process|bm-agent-init: /, after: 'kernel' },
  { name: 'agent', pattern: /starting bm-agent run|"msg":"bm-agent starting"/, after: 'kernel' },
  // The agent's own first line: the gap from `agent` is node loading the bundle.
  { name: 'agent-up', pattern: /bm-agent starting/, after: 'agent' },
];

/** Lines after which the boot cannot succeed: waiting on is pointless. */
const FATAL_LINES = [/No bootable device/, /Kernel panic/, /No more network devices/, /Could not boot/];

/** The order phases are printed in; hello and the rest are marked by the caller. */
export const PHASE_ORDER = [
  'qemu',
  'firmware',
  'ipxe',
  'ipxe-dhcp',
  'script',
  'kernel-fetched',
  'initrd-fetched',
  'kernel',
  'init',
  'agent',
  'agent-up',
  'connect',
  'hello',
] as const;

const escapeRegExp = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** What QEMU's option parser would split or misread inside a -netdev value. */
const assertPlainOptionValue = (value: string): void => {
  if (value.includes(',')) throw new Error(`a comma in ${JSON.stringify(value)} would split the QEMU option`);
};

const shellWord = (word: string): string => {
  if (/^[\w@%+=:,./-]+$/.test(word)) return word;
  if (word.includes("'")) throw new Error(`cannot quote ${JSON.stringify(word)} for the relay command`);
  return `'${word}'`;
};

const expectPort = (what: string, port: number): number => {
  if (!Number.isInteger(port) || port < 1 || port > 65_535)
    throw new TypeError(`Expected ${what} to be a port number (1-65535), got ${String(port)}`);
  return port;
};

/**
 * The forwards of a boot: the boot server on port 80, the conductor on 8080 when there is one,
 * then the caller's. Each guest port and each host port once: of two rules for one port, only
 * one could ever be reached, so a clash is the caller's mistake and fails here, before QEMU starts.
 */
export const forwardRules = (options: {
  bootPort: number;
  conductorPort: number | null;
  guestForwards?: readonly GuestForward[];
  hostForwards?: readonly HostForward[];
}): { guest: GuestForward[]; host: HostForward[] } => {
  const guest: GuestForward[] = [
    { guestPort: GUEST_HTTP_PORT, hostPort: expectPort('the boot server port', options.bootPort) },
  ];
  if (options.conductorPort !== null)
    guest.push({
      guestPort: GUEST_CONDUCTOR_PORT,
      hostPort: expectPort('the conductor port', options.conductorPort),
    });
  for (const rule of options.guestForwards ?? []) {
    expectPort('guestForwards.guestPort', rule.guestPort);
    expectPort('guestForwards.hostPort', rule.hostPort);
    if (guest.some((taken) => taken.guestPort === rule.guestPort))
      throw new Error(`guest port ${rule.guestPort} on ${GUEST_SERVICE_HOST} is already forwarded`);
    guest.push({ guestPort: rule.guestPort, hostPort: rule.hostPort });
  }
  const host: HostForward[] = [];
  for (const rule of options.hostForwards ?? []) {
    expectPort('hostForwards.hostPort', rule.hostPort);
    expectPort('hostForwards.guestPort', rule.guestPort);
    if (host.some((taken) => taken.hostPort === rule.hostPort))
      throw new Error(`host port 127.0.0.1:${rule.hostPort} is already forwarded into the guest`);
    host.push({ hostPort: rule.hostPort, guestPort: rule.guestPort });
  }
  return { guest, host };
};

const freeUdpPort = async (): Promise<number> => {
  const probe = createSocket('udp4');
  probe.bind(0, '127.0.0.1');
  await once(probe, 'listening');
  const { port } = probe.address();
  probe.close();
  return port;
};

// Control sequences SeaBIOS and iPXE use to draw; they would break the line patterns.
// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]|\x1b[=>c]/g;

let vmSeq = 0;

/** VMs not yet stopped: a test process that ends, however it ends, takes them with it. */
const liveVms = new Set<QemuVm>();
let processEndHooked = false;

const killLiveVms = (): void => {
  for (const vm of liveVms) vm.killNow();
};

/**
 * Once per process: on exit, and on the signals a test runner or a terminal sends, kill what is
 * still running. A signal is then raised again so that it ends the process as it would have.
 */
const hookProcessEnd = (): void => {
  if (processEndHooked) return;
  processEndHooked = true;
  process.once('exit', killLiveVms);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      killLiveVms();
      process.kill(process.pid, signal);
    });
  }
};

export class QemuVm {
  readonly lines: ConsoleLine[] = [];
  readonly consoleLog: string;
  readonly macs: readonly [string, string];
  /** Host epoch ms at which QEMU was started: every `at` counts from here. */
  readonly startedAt: number;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** The UDP socket whose datagrams become Ethernet frames on the second NIC; null without it. */
  readonly lldpSocket: UdpSocket | null;
  readonly argv: string[];
  private readonly phaseTimes = new Map<string, number>();
  private readonly lineWaiters = new Set<() => void>();
  private readonly child: ChildProcess;
  private readonly tag: string;
  private readonly log: WriteStream;
  private readonly cleanups: Array<() => void> = [];
  private lldpTarget: number | null = null;
  private fatal: ConsoleLine | null = null;
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | null = null;

  private constructor(
    readonly options: VmOptions,
    spawnArgs: { argv: string[]; tag: string; lldpSocket: UdpSocket | null; lldpTarget: number | null },
  ) {
    this.macs = options.macs ?? DEFAULT_MACS;
    this.argv = spawnArgs.argv;
    this.tag = spawnArgs.tag;
    this.lldpSocket = spawnArgs.lldpSocket;
    this.lldpTarget = spawnArgs.lldpTarget;
    this.consoleLog = path.join(options.runDir, 'console.log');
    this.log = createWriteStream(this.consoleLog);
    const env = { ...process.env };
    // The relays QEMU starts are node programs: they must not think they run under node --test.
    delete env.NODE_TEST_CONTEXT;
    delete env.NODE_OPTIONS;
    this.startedAt = Date.now();
    this.child = spawn(QEMU_BINARY, spawnArgs.argv, { stdio: ['pipe', 'pipe', 'pipe'], env });
    this.phaseTimes.set('qemu', 0);
    this.readConsole();
    this.child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      for (const text of chunk.split('\n')) if (text.trim()) this.addLine(`[qemu stderr] ${text.trim()}`);
    });
    // After 'exit' the console pipe may still hold the last lines (the power-down messages).
    this.child.once('close', () => this.log.end());
    this.exited = new Promise((resolve) => {
      this.child.once('error', (error) => {
        this.exitInfo = { code: null, signal: null };
        this.addLine(`[qemu] could not start: ${error.message}`);
        this.log.end();
        resolve(this.exitInfo);
      });
      this.child.once('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        this.mark('exit');
        this.addLine(`[qemu] exited code=${code ?? '-'} signal=${signal ?? '-'}`);
        this.killRelays();
        resolve(this.exitInfo);
      });
    });
    liveVms.add(this);
    hookProcessEnd();
    this.cleanups.push(() => liveVms.delete(this));
    const unsubscribe = options.boot.onRequest((request) => this.onBootRequest(request));
    this.cleanups.push(unsubscribe);
  }

  /** Starts QEMU; resolves once the process is spawned (not booted). */
  static async start(options: VmOptions): Promise<QemuVm> {
    const macs = options.macs ?? DEFAULT_MACS;
    const tag = `bma-e2e-vm-${process.pid}-${++vmSeq}-${Date.now().toString(36)}`;
    const { ramdisk, boot, runDir } = options;
    await mkdir(runDir, { recursive: true });
    boot.publish('/vmlinuz', ramdisk.vmlinuz);
    boot.publish('/initramfs.img', ramdisk.initramfs);

    const cmdline = [
      'console=ttyS0,115200n8',
      // With -no-reboot a panic ends QEMU at once instead of hanging until the test's timeout.
      'panic=-1',
      ...(options.conductor
        ? [`bma-conductor-url=ws://${GUEST_SERVICE_HOST}:${GUEST_CONDUCTOR_PORT}${options.conductor.path}`]
        : []),
      'ipa-insecure=1',
      'bma-power-backend=command',
    ];
    const extraArgs = [
      ...(options.kernelArgs ?? []),
      ...(process.env.BMA_QEMU_KERNEL_ARGS ?? '').split(/\s+/).filter(Boolean),
    ];
    // slirp splits the command the way a shell would (g_shell_parse_argv), without running one.
    const relay = (port: number): string => {
      const command = [process.execPath, '--no-warnings', RELAY_SCRIPT, String(port), tag]
        .map(shellWord)
        .join(' ');
      assertPlainOptionValue(command);
      return command;
    };
    const rules = forwardRules({
      bootPort: boot.port,
      conductorPort: options.conductor?.port ?? null,
      guestForwards: options.guestForwards,
      hostForwards: options.hostForwards,
    });
    const forwards = [
      ...rules.guest.map(
        ({ guestPort, hostPort }) => `guestfwd=tcp:${GUEST_SERVICE_HOST}:${guestPort}-cmd:${relay(hostPort)}`,
      ),
      // restrict=on leaves explicit forwards open: these are the host's only ways in.
      ...rules.host.map(({ hostPort, guestPort }) => `hostfwd=tcp:127.0.0.1:${hostPort}-:${guestPort}`),
    ];
    let netdev = `user,id=n0,restrict=on,net=10.0.2.0/24,${forwards.join(',')}`;
    const args: string[] = [];

    if (options.mode === 'pxe') {
      const script = [
        '#!ipxe',
        'echo bm-agent e2e: loading the kernel and the initramfs over HTTP',
        // BOOTIF the way Ironic's templates pass it: iPXE knows which NIC it booted from.
        `kernel http://${GUEST_SERVICE_HOST}/vmlinuz initrd=initramfs.img ${[
          ...cmdline,
          'BOOTIF=01-${net0/mac:hexhyp}',
          ...extraArgs,
        ].join(' ')}`,
        `initrd http://${GUEST_SERVICE_HOST}/initramfs.img`,
        'boot',
        '',
      ].join('\n');
      const tftpRoot = path.join(runDir, 'tftp');
      await mkdir(tftpRoot, { recursive: true });
      await writeFile(path.join(tftpRoot, 'boot.ipxe'), script);
      boot.publish('/boot.ipxe', path.join(tftpRoot, 'boot.ipxe'));
      assertPlainOptionValue(tftpRoot);
      netdev +=
        (options.pxeScript ?? 'tftp') === 'tftp'
          ? `,tftp=${tftpRoot},bootfile=boot.ipxe`
          : `,bootfile=http://${GUEST_SERVICE_HOST}/boot.ipxe`;
    } else {
      const kernel = ramdisk.vmlinux ?? ramdisk.vmlinuz;
      const bootif = `BOOTIF=01-${macs[0].replace(/:/g, '-')}`;
      args.push(
        '-kernel',
        kernel,
        '-initrd',
        ramdisk.initramfs,
        '-append',
        [...cmdline, bootif, ...extraArgs].join(' '),
      );
    }

    args.unshift(
      '-machine',
      'pc,graphics=off',
      '-accel',
      'tcg',
      '-cpu',
      'max',
      '-smp',
      String(options.cpus ?? 1),
      '-m',
      String(options.memoryMiB ?? 1024),
      '-nodefaults',
      '-no-user-config',
      '-display',
      'none',
      '-vga',
      'none',
      '-monitor',
      'none',
      '-serial',
      'stdio',
      // A reboot, a panic or a triple fault ends the run instead of booting again.
      '-no-reboot',
      '-netdev',
      netdev,
      '-device',
      // QEMU's default ROM for this device is Debian's iPXE (IPXE_ROM), and only a default ROM
      // gets its PCI device ID patched to the device's: named explicitly, SeaBIOS skips it as
      // built for another device. A direct boot needs no ROM at all.
      `virtio-net-pci,netdev=n0,mac=${macs[0]},${options.mode === 'pxe' ? '' : 'romfile=,'}bootindex=1`,
      '-device',
      'virtio-rng-pci',
    );

    let lldpSocket: UdpSocket | null = null;
    let lldpTarget: number | null = null;
    if (options.lldpNic ?? true) {
      lldpSocket = createSocket('udp4');
      lldpSocket.bind(0, '127.0.0.1');
      await once(lldpSocket, 'listening');
      // Frames the guest sends out of that NIC arrive here; nothing reads them.
      lldpSocket.on('message', () => undefined);
      lldpTarget = await freeUdpPort();
      args.push(
        '-netdev',
        `dgram,id=n1,local.type=inet,local.host=127.0.0.1,local.port=${lldpTarget},` +
          `remote.type=inet,remote.host=127.0.0.1,remote.port=${lldpSocket.address().port}`,
        // No option ROM: only the first NIC may PXE-boot.
        '-device',
        `virtio-net-pci,netdev=n1,mac=${macs[1]},romfile=`,
      );
    }
    if (options.disk) {
      assertPlainOptionValue(options.disk.file);
      args.push(
        '-drive',
        `file=${options.disk.file},format=raw,if=none,id=d0,cache=writeback`,
        '-device',
        `virtio-blk-pci,drive=d0,serial=${options.disk.serial ?? 'bma-e2e-disk'}`,
      );
    }
    const vm = new QemuVm(options, { argv: args, tag, lldpSocket, lldpTarget });
    // The spawn itself can fail (ENOENT); that shows as an exit with no code.
    await Promise.race([once(vm.child, 'spawn'), vm.exited]);
    return vm;
  }

  get running(): boolean {
    return this.exitInfo === null && this.child.exitCode === null && this.child.signalCode === null;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Host milliseconds since QEMU started. */
  now(): number {
    return Date.now() - this.startedAt;
  }

  /** Records a phase at `epochMs` (now by default); the first mark of a name wins. */
  mark(name: string, epochMs = Date.now()): void {
    if (!this.phaseTimes.has(name)) this.phaseTimes.set(name, epochMs - this.startedAt);
  }

  phases(): Map<string, number> {
    return new Map(this.phaseTimes);
  }

  /** Seconds since QEMU start of each phase reached, in boot order, with the step from the previous. */
  formatPhases(title = `${this.options.mode} boot`): string {
    const known = new Set<string>(PHASE_ORDER);
    const names = [
      ...PHASE_ORDER.filter((name) => this.phaseTimes.has(name)),
      ...[...this.phaseTimes.entries()]
        .filter(([name]) => !known.has(name))
        .sort((a, b) => a[1] - b[1])
        .map(([name]) => name),
    ];
    const rows = [`${title}: host seconds since QEMU start`];
    let previous = 0;
    for (const name of names) {
      const at = this.phaseTimes.get(name) ?? 0;
      const step = at - previous;
      rows.push(`  ${name.padEnd(16)} ${(at / 1000).toFixed(2).padStart(7)}  (+${(step / 1000).toFixed(2)})`);
      previous = Math.max(previous, at);
    }
    return rows.join('\n');
  }

  /** Resolves with the first console line (already seen or to come) that matches. */
  waitForLine(pattern: RegExp | string, timeoutMs: number): Promise<ConsoleLine> {
    const regexp = typeof pattern === 'string' ? new RegExp(escapeRegExp(pattern)) : pattern;
    return new Promise((resolve, reject) => {
      let seen = 0;
      const check = (): void => {
        for (; seen < this.lines.length; seen++) {
          const line = this.lines[seen];
          if (line && regexp.test(line.text)) {
            finish();
            resolve(line);
            return;
          }
        }
        if (!this.running) {
          finish();
          reject(new Error(`QEMU exited before a console line matched ${regexp}\n${this.tail()}`));
        }
      };
      const finish = (): void => {
        clearTimeout(timer);
        this.lineWaiters.delete(check);
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`no console line matched ${regexp} within ${timeoutMs} ms\n${this.tail()}`));
      }, timeoutMs);
      this.lineWaiters.add(check);
      check();
    });
  }

  /** Resolves when QEMU exits by itself within the time; rejects (QEMU still running) otherwise. */
  async waitForExit(timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`QEMU still running after ${timeoutMs} ms\n${this.tail()}`)),
        timeoutMs,
      );
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * `promise`, unless the boot fails first: a console line no boot recovers from, or QEMU gone.
   * For the waits of a boot (the hello, a command), not for an expected power-off.
   */
  guard<T>(promise: Promise<T>, what: string): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const check = (): void => {
        if (this.fatal !== null) fail(`the guest printed "${this.fatal.text}"`);
        else if (!this.running) fail('QEMU exited');
      };
      const fail = (why: string): void => {
        this.lineWaiters.delete(check);
        reject(new Error(`${what}: ${why}\n${this.tail()}`));
      };
      this.lineWaiters.add(check);
      void this.exited.then(check);
      promise.then(
        (value) => {
          this.lineWaiters.delete(check);
          resolve(value);
        },
        (error: unknown) => {
          this.lineWaiters.delete(check);
          reject(error instanceof Error ? error : new Error(String(error)));
        },
      );
      check();
    });
  }

  /** The last console lines, for failure messages. */
  tail(count = 40): string {
    return this.lines
      .slice(-count)
      .map((line) => `  [${(line.at / 1000).toFixed(2)}] ${line.text}`)
      .join('\n');
  }

  /** Sends one Ethernet frame into the second NIC. */
  async sendFrame(frame: Buffer): Promise<void> {
    const socket = this.lldpSocket;
    const port = this.lldpTarget;
    if (socket === null || port === null) throw new Error('this VM has no dgram NIC');
    await new Promise<void>((resolve, reject) =>
      socket.send(frame, port, '127.0.0.1', (error) => (error ? reject(error) : resolve())),
    );
  }

  /**
   * Sends `frame` every `intervalMs` until stopped, at most `maxFrames` times (so a forgotten
   * sender still ends), as a switch sends LLDP.
   */
  repeatFrame(frame: Buffer, intervalMs = 500, maxFrames = 600): () => void {
    let sent = 0;
    const tick = (): void => {
      if (!this.running || sent >= maxFrames) {
        clearInterval(timer);
        return;
      }
      sent += 1;
      this.sendFrame(frame).catch(() => undefined);
    };
    const timer = setInterval(tick, intervalMs);
    timer.unref();
    tick();
    const stop = (): void => clearInterval(timer);
    this.cleanups.push(stop);
    return stop;
  }

  /** SIGKILL to QEMU and its relays, synchronously: for a process on its way out. */
  killNow(): void {
    if (this.running) this.child.kill('SIGKILL');
    this.killRelays();
  }

  /** Ends QEMU (SIGTERM, then SIGKILL) and every relay it started; safe to call more than once. */
  async stop(): Promise<void> {
    if (this.running) {
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 3000);
      await this.exited;
      clearTimeout(timer);
    }
    this.killRelays();
    for (const cleanup of this.cleanups.splice(0)) cleanup();
    this.lldpSocket?.close();
    await new Promise<void>((resolve) => (this.log.closed ? resolve() : this.log.end(resolve)));
  }

  private readConsole(): void {
    let buffered = '';
    const stdout = this.child.stdout;
    if (!stdout) return;
    stdout.setEncoding('latin1');
    stdout.on('data', (chunk: string) => {
      buffered += chunk;
      const parts = buffered.split('\n');
      buffered = parts.pop() ?? '';
      for (const part of parts) this.addLine(part);
      // iPXE draws progress without newlines; a long partial line is kept whole, not split.
      if (buffered.length > 64 * 1024) {
        this.addLine(buffered);
        buffered = '';
      }
    });
    stdout.once('end', () => {
      if (buffered) this.addLine(buffered);
    });
  }

  private addLine(raw: string): void {
    // A carriage return redraws the line on a terminal; what is left after the last one is what shows.
    const text = raw
      .replace(ANSI, '')
      .split('\r')
      .filter((piece) => piece !== '')
      .join(' ')
      // eslint-disable-next-line no-control-regex
      .replace(/[\x00-\x08\x0b-\x1f\x7f]/g, '')
      .trimEnd();
    if (text === '') return;
    const line: ConsoleLine = { at: this.now(), text };
    this.lines.push(line);
    if (!this.log.writableEnded) this.log.write(`[${(line.at / 1000).toFixed(3).padStart(8)}] ${text}\n`);
    if (this.fatal === null && FATAL_LINES.some((pattern) => pattern.test(text))) this.fatal = line;
    for (const phase of CONSOLE_PHASES) {
      if (this.phaseTimes.has(phase.name) || (phase.after && !this.phaseTimes.has(phase.after))) continue;
      if (phase.pattern.test(text)) this.phaseTimes.set(phase.name, line.at);
    }
    this.options.onLine?.(line);
    for (const waiter of [...this.lineWaiters]) waiter();
  }

  private onBootRequest(request: BootRequest): void {
    if (request.finishedAt === null || request.status >= 300) return;
    const names: Record<string, string> = {
      '/boot.ipxe': 'script',
      '/vmlinuz': 'kernel-fetched',
      '/initramfs.img': 'initrd-fetched',
    };
    const name = names[request.path];
    if (name !== undefined && request.finishedAt >= this.startedAt) this.mark(name, request.finishedAt);
  }

  /** slirp starts the relays in their own session, so they are found by the tag in their argv. */
  private killRelays(): void {
    let entries: string[];
    try {
      // Synchronous: this also runs from the process 'exit' handler.
      entries = readdirSync('/proc');
    } catch {
      return;
    }
    for (const entry of entries) {
      if (!/^\d+$/.test(entry)) continue;
      let argv: string;
      try {
        argv = readFileSync(`/proc/${entry}/cmdline`, 'latin1');
      } catch {
        continue;
      }
      if (!argv.split('\0').includes(this.tag)) continue;
      try {
        process.kill(Number(entry), 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
  }
}

/**
 * Waits for the VM's agent to be accepted by `conductor`, marking `connect` and `hello` on the
 * VM's clock; fails early when the boot does.
 */
export const waitForHello = async (
  vm: QemuVm,
  conductor: ReferenceConductor,
  timeoutMs = 120_000,
): Promise<HelloRecord> => {
  const onConnection = (): void => vm.mark('connect');
  conductor.on('connection', onConnection);
  try {
    const hello = await vm.guard(
      conductor.waitFor(
        () => conductor.hellos().find((record) => record.accepted && record.at >= vm.startedAt),
        timeoutMs,
        `an accepted hello within ${timeoutMs} ms of QEMU's start`,
      ),
      'waiting for the agent to say hello',
    );
    vm.mark('hello', hello.at);
    return hello;
  } finally {
    conductor.off('connection', onConnection);
  }
};

// ---- LLDP frames -------------------------------------------------------------------------------

export interface LldpNeighbour {
  /** The switch's chassis MAC (chassis ID subtype 4) and the frame's source. */
  chassisMac: string;
  /** Port ID subtype 5 (interface name). */
  portId: string;
  portDescription?: string;
  systemName: string;
  systemDescription?: string;
  ttlS?: number;
}

const lldpTlv = (type: number, value: Buffer): Buffer => {
  const header = Buffer.alloc(2);
  header.writeUInt16BE((type << 9) | value.length);
  return Buffer.concat([header, value]);
};

const macBytes = (mac: string): Buffer => Buffer.from(mac.replace(/[:-]/g, ''), 'hex');

/** An LLDPDU as a switch sends it, padded to the 60-byte Ethernet minimum. */
export const lldpFrame = (neighbour: LldpNeighbour): Buffer => {
  const ttl = Buffer.alloc(2);
  ttl.writeUInt16BE(neighbour.ttlS ?? 120);
  const parts = [
    macBytes('01:80:c2:00:00:0e'),
    macBytes(neighbour.chassisMac),
    Buffer.from([0x88, 0xcc]),
    lldpTlv(1, Buffer.concat([Buffer.from([4]), macBytes(neighbour.chassisMac)])),
    lldpTlv(2, Buffer.concat([Buffer.from([5]), Buffer.from(neighbour.portId)])),
    lldpTlv(3, ttl),
  ];
  if (neighbour.portDescription !== undefined) parts.push(lldpTlv(4, Buffer.from(neighbour.portDescription)));
  parts.push(lldpTlv(5, Buffer.from(neighbour.systemName)));
  if (neighbour.systemDescription !== undefined)
    parts.push(lldpTlv(6, Buffer.from(neighbour.systemDescription)));
  parts.push(lldpTlv(0, Buffer.alloc(0)));
  const frame = Buffer.concat(parts);
  return frame.length >= 60 ? frame : Buffer.concat([frame, Buffer.alloc(60 - frame.length)]);
};
