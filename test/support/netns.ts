/**
 * Network-namespace labs for LLDP tests and the LLDP benchmark: namespaces joined by veth pairs,
 * Debian's lldpd as the switch on the far end of each, a raw-frame sender for hostile frames, and
 * the real agent CLI run inside the agent's namespace. Everything a lab creates is torn down by
 * `cleanup()`, which never throws and is safe to call twice.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { findOnPath } from '../../agent/util/run-process.js';
import { AGENT_MAIN, writeCmdline } from './spawn-agent.js';

const execFileAsync = promisify(execFile);

export const LLDP_TOOLS = ['ip', 'lldpd', 'lldpcli', 'tcpdump'] as const;

/** Why LLDP lab tests cannot run here, or null when they can. */
export const lldpLabSkipReason = async (tools: readonly string[] = LLDP_TOOLS): Promise<string | null> => {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces, veth, lldpd)';
  // Debian puts lldpd and ip in /usr/sbin, which a non-login PATH may lack.
  const searchPath = `${process.env.PATH ?? ''}:/usr/sbin:/sbin`;
  const missing: string[] = [];
  for (const tool of tools) if ((await findOnPath(tool, searchPath)) === null) missing.push(tool);
  return missing.length > 0 ? `needs ${missing.join(', ')} (apt-get install lldpd tcpdump iproute2)` : null;
};

export const run = async (file: string, args: string[]): Promise<string> => {
  try {
    const { stdout } = await execFileAsync(file, args, { timeout: 20_000 });
    return stdout;
  } catch (error) {
    const stderr = (error as { stderr?: unknown }).stderr;
    throw new Error(
      `${file} ${args.join(' ')} failed: ${typeof stderr === 'string' ? stderr.trim() : String(error)}`,
    );
  }
};

export interface LldpVlanSpec {
  id: number;
  name: string;
}

/** What the far-end lldpd advertises; the test asserts the agent reports exactly this. */
export interface SwitchSpec {
  systemName: string;
  systemDescription: string;
  /** Port ID, sent with subtype "local". */
  portId: string;
  portDescription: string;
  vlans: LldpVlanSpec[];
  /** Max frame size advertised; also set as the MTU of both veth ends. */
  mtu: number;
  txIntervalS?: number;
}

export interface LldpdPeer {
  ns: string;
  port: string;
  child: ChildProcess;
  output: () => string;
  stop(): Promise<void>;
}

const hexBytes = (bytes: Buffer): string =>
  [...bytes].map((byte) => byte.toString(16).padStart(2, '0')).join(',');

/**
 * lldpd 1.0 derives neither 802.1 VLAN Name TLVs without VLAN sub-interfaces (the kernel here may
 * lack 8021q) nor an 802.3 Max Frame Size TLV from the MTU, so both go out as custom TLVs: the
 * bytes on the wire are the standard TLVs a switch sends.
 */
const customTlvLines = (port: string, spec: SwitchSpec): string[] => {
  const lines: string[] = [];
  const mfs = Buffer.alloc(2);
  mfs.writeUInt16BE(spec.mtu);
  lines.push(`configure ports ${port} lldp custom-tlv add oui 00,12,0f subtype 4 oui-info ${hexBytes(mfs)}`);
  for (const vlan of spec.vlans) {
    const name = Buffer.from(vlan.name, 'utf8');
    const info = Buffer.alloc(3 + name.length);
    info.writeUInt16BE(vlan.id, 0);
    info.writeUInt8(name.length, 2);
    name.copy(info, 3);
    lines.push(
      `configure ports ${port} lldp custom-tlv add oui 00,80,c2 subtype 3 oui-info ${hexBytes(info)}`,
    );
  }
  return lines;
};

const quote = (text: string): string => `"${text.replace(/["\\]/g, '')}"`;

export const lldpdConfig = (port: string, spec: SwitchSpec): string =>
  [
    `configure system hostname ${quote(spec.systemName)}`,
    `configure system description ${quote(spec.systemDescription)}`,
    `configure lldp tx-interval ${spec.txIntervalS ?? 1}`,
    `configure ports ${port} lldp portidsubtype local ${quote(spec.portId)} description ${quote(spec.portDescription)}`,
    ...customTlvLines(port, spec),
    '',
  ].join('\n');

export interface AgentRun {
  code: number | null;
  stdout: string;
  stderr: string;
  /** From spawn to exit. */
  wallMs: number;
  /** Date.now() when the process exited, to compare with capture timestamps. */
  exitedAtMs: number;
}

export class NetnsLab {
  readonly prefix: string;
  private readonly namespaces: string[] = [];
  private readonly peers: LldpdPeer[] = [];
  private readonly senders: ChildProcess[] = [];
  private dir: string | null = null;

  constructor(label: string) {
    // Names carry the pid so concurrent runs (and a crashed earlier run) never collide.
    this.prefix = `bma${process.pid}${label}`;
  }

  private async workDir(): Promise<string> {
    if (this.dir === null) {
      this.dir = await mkdtemp(path.join(os.tmpdir(), `${this.prefix}-`));
      // lldpd configures itself through lldpcli as its unprivileged user, which must reach the socket.
      await chmod(this.dir, 0o755);
    }
    return this.dir;
  }

  async addNamespace(name: string): Promise<string> {
    const ns = `${this.prefix}-${name}`;
    await run('ip', ['netns', 'add', ns]);
    this.namespaces.push(ns);
    await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    return ns;
  }

  /** A veth pair from `agentIf` in `agentNs` to `peerIf` in `peerNs`; both ends up unless told. */
  async addLink(
    agentNs: string,
    agentIf: string,
    peerNs: string,
    peerIf: string,
    options: { mtu?: number; agentUp?: boolean; peerUp?: boolean } = {},
  ): Promise<void> {
    await run('ip', [
      'link',
      'add',
      agentIf,
      'netns',
      agentNs,
      'type',
      'veth',
      'peer',
      'name',
      peerIf,
      'netns',
      peerNs,
    ]);
    if (options.mtu !== undefined) {
      await run('ip', ['-n', agentNs, 'link', 'set', agentIf, 'mtu', String(options.mtu)]);
      await run('ip', ['-n', peerNs, 'link', 'set', peerIf, 'mtu', String(options.mtu)]);
    }
    if (options.peerUp ?? true) await run('ip', ['-n', peerNs, 'link', 'set', peerIf, 'up']);
    if (options.agentUp ?? true) await run('ip', ['-n', agentNs, 'link', 'set', agentIf, 'up']);
  }

  async linkFlags(ns: string, ifname: string): Promise<string[]> {
    const [link] = JSON.parse(await run('ip', ['-n', ns, '-j', 'link', 'show', 'dev', ifname])) as Array<{
      flags: string[];
    }>;
    return link?.flags ?? [];
  }

  async macAddress(ns: string, ifname: string): Promise<string> {
    const [link] = JSON.parse(await run('ip', ['-n', ns, '-j', 'link', 'show', 'dev', ifname])) as Array<{
      address: string;
    }>;
    return link?.address ?? '';
  }

  /** Runs lldpd in the foreground in `ns`, configured before its first frame (it starts paused). */
  async startLldpd(ns: string, port: string, spec: SwitchSpec): Promise<LldpdPeer> {
    const dir = await this.workDir();
    const base = path.join(dir, `${ns}-${port}`);
    await writeFile(`${base}.conf`, lldpdConfig(port, spec));
    const child = spawn(
      'ip',
      [
        'netns',
        'exec',
        ns,
        'lldpd',
        '-d',
        '-u',
        `${base}.sock`,
        '-p',
        `${base}.pid`,
        '-I',
        port,
        '-C',
        port,
        '-O',
        `${base}.conf`,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let output = '';
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const peer: LldpdPeer = {
      ns,
      port,
      child,
      output: () => output,
      stop: async () => {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGTERM');
          await Promise.race([exited, sleep(2000)]);
        }
        // lldpd forks a privilege-separated child; whatever is left in the namespace goes too.
        await killNamespaceProcesses(ns);
      },
    };
    this.peers.push(peer);
    return peer;
  }

  /**
   * Sends `frame` from `ifname` in `ns` every `intervalMs` until stopped, through python3's
   * AF_PACKET socket (Node cannot send raw frames).
   */
  startRawSender(ns: string, ifname: string, frame: Buffer, intervalMs = 100): ChildProcess {
    const script = [
      'import socket, sys, time',
      's = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)',
      's.bind((sys.argv[1], 0))',
      'frame = bytes.fromhex(sys.argv[2])',
      'while True:',
      '    s.send(frame)',
      '    time.sleep(float(sys.argv[3]))',
    ].join('\n');
    const child = spawn(
      'ip',
      [
        'netns',
        'exec',
        ns,
        'python3',
        '-c',
        script,
        ifname,
        frame.toString('hex'),
        String(intervalMs / 1000),
      ],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    this.senders.push(child);
    return child;
  }

  /** The agent CLI (dist/agent/main.js), run inside `ns`, with a kernel command line of its own. */
  async runAgent(ns: string, args: string[], env: Record<string, string> = {}): Promise<AgentRun> {
    const cmdline = await writeCmdline('');
    const started = performance.now();
    const child = spawn('ip', ['netns', 'exec', ns, process.execPath, AGENT_MAIN, ...args], {
      env: { ...process.env, BMA_CMDLINE: cmdline, BMA_POWER_BACKEND: 'none', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const code = await new Promise<number | null>((resolve) =>
      child.once('close', (exitCode) => resolve(exitCode)),
    );
    const exitedAtMs = Date.now();
    await rm(path.dirname(cmdline), { recursive: true, force: true });
    return { code, stdout, stderr, wallMs: performance.now() - started, exitedAtMs };
  }

  async cleanup(): Promise<void> {
    for (const sender of this.senders.splice(0)) if (sender.exitCode === null) sender.kill('SIGKILL');
    await Promise.all(this.peers.splice(0).map((peer) => peer.stop().catch(() => undefined)));
    for (const ns of this.namespaces.splice(0)) {
      await killNamespaceProcesses(ns).catch(() => undefined);
      await run('ip', ['netns', 'del', ns]).catch(() => undefined);
    }
    if (this.dir !== null) await rm(this.dir, { recursive: true, force: true }).catch(() => undefined);
    this.dir = null;
  }
}

/** SIGKILLs every process still in `ns`, by pid (they were all started by this lab). */
const killNamespaceProcesses = async (ns: string): Promise<void> => {
  let pids: number[];
  try {
    pids = (await run('ip', ['netns', 'pids', ns]))
      .split('\n')
      .map((line) => Number.parseInt(line, 10))
      .filter((pid) => Number.isInteger(pid) && pid > 0);
  } catch {
    return;
  }
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
};
