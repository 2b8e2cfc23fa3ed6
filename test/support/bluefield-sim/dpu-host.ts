/**
 * The Arm side of simulated BlueField DPUs as real processes in network namespaces:
 *
 *   [outside ns] eth0 198.51.100.1/24, lo 203.0.113.80 (HTTP server)
 *        |
 *   [host ns] uplink0 198.51.100.2/24, default via 198.51.100.1
 *        |  tmfifo_net<N> (host end, no address: setting it up is the agent's job)
 *        |
 *   [dpu<N> ns] tmfifo_net0 <DPU address>, default via the host address, sshd on port 22
 *
 * Addresses follow the agent's subnet plan (nat.ts). The outside ns has no route back to the DPU
 * subnets, so a DPU reaches the HTTP server only when the host masquerades it.
 *
 * Each DPU's sshd runs in a mount namespace of its own where /etc and /run are overlays: /etc adds
 * `mlnx-release` (and `bf.cfg`) as links into the DPU's root directory, so `cat /etc/mlnx-release`
 * in a session shows what the rshim simulator installed, and a passwd whose root lives in
 * `<dpuRoot>/root`; /run adds the /run/sshd that sshd insists on. The machine's real /etc and /run
 * are never written. Sessions get PATH starting with the DPU's bin directory, BMA_SIM_SIDE=arm,
 * BMA_DPU_ROOT, BMA_DPU_INDEX and BMA_DPU_RELEASE_FILE.
 *
 * The "host tools" directory holds ip, sysctl, nft, iptables and ssh wrappers that run the real
 * programs inside the host namespace, plus ssh-keygen as is. An agent in the root namespace given
 * only that directory as its PATH acts on the lab's network alone.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { appendFile, chmod, mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { DEFAULT_SUBNET_PLAN, tmfifoSubnet, type SubnetPlan } from '../../../agent/hardware/bluefield/nat.js';
import { findOnPath } from '../../../agent/util/run-process.js';

const SYSTEM_PATH = '/usr/sbin:/usr/bin:/sbin:/bin';
const HOST_TOOLS = ['ip', 'sysctl', 'nft', 'iptables', 'ssh'] as const;
const PASSTHROUGH_TOOLS = ['ssh-keygen'] as const;
const START_TIMEOUT_MS = 10_000;

export const UPLINK = 'uplink0';
export const UPLINK_ADDRESS = '198.51.100.2';
export const GATEWAY_ADDRESS = '198.51.100.1';
export const OUTSIDE_ADDRESS = '203.0.113.80';
const OUTSIDE_PORT = 8080;

export interface RunOutput {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a program, never throwing: the caller looks at the code. */
export const execQuiet = (file: string, args: string[], timeoutMs = 20_000): Promise<RunOutput> =>
  new Promise((resolve) => {
    execFile(file, args, { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : null) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });

const must = async (file: string, args: string[]): Promise<string> => {
  const result = await execQuiet(file, args);
  if (result.code !== 0) {
    throw new Error(`${file} ${args.join(' ')} failed (${result.code}): ${result.stderr.trim()}`);
  }
  return result.stdout;
};

const resolveSystem = async (name: string): Promise<string | null> => findOnPath(name, SYSTEM_PATH);

/** Why these labs cannot run here, or null when they can. */
export const dpuHostsSkipReason = async (extra: readonly string[] = []): Promise<string | null> => {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces, veth, sshd, mounts)';
  const missing: string[] = [];
  for (const tool of ['ip', 'sshd', 'ssh', 'ssh-keygen', 'unshare', 'mount', 'base64', ...extra]) {
    if ((await resolveSystem(tool)) === null) missing.push(tool);
  }
  return missing.length > 0 ? `needs ${missing.join(', ')}` : null;
};

/**
 * Adds a public key line to `<dpuRoot>/root/.ssh/authorized_keys` (once), as a BFB install with
 * the agent's key in bf.cfg leaves it; for simulators that hold a DPU root but not the lab.
 */
export const authorizeKeyIn = async (dpuRoot: string, publicKey: string): Promise<void> => {
  const directory = path.join(dpuRoot, 'root', '.ssh');
  const file = path.join(directory, 'authorized_keys');
  await mkdir(directory, { recursive: true, mode: 0o700 });
  const line = publicKey.trim();
  let current = '';
  try {
    current = await readFile(file, 'utf8');
  } catch {
    // Not there yet.
  }
  if (current.split('\n').includes(line)) return;
  const separator = current === '' || current.endsWith('\n') ? '' : '\n';
  await appendFile(file, `${separator}${line}\n`, { mode: 0o600 });
};

export interface StartDpuHostsOptions {
  /** An existing directory the lab may fill; the caller removes it. No whitespace in the path. */
  dir: string;
  count: number;
  /** Part of the namespace names, to tell labs apart in `ip netns list`. */
  label?: string;
  plan?: SubnetPlan;
  /** Put the host address on each tmfifo end and bring it up, as configureNat would. */
  configureHostSide?: boolean;
  /** Where each DPU's files live (e.g. chosen by the rshim simulator); `<dir>/dpu<N>/rootfs` by default. */
  dpuRoots?: string[];
  /** Each DPU's tool directory, first on the sessions' PATH; `<dir>/dpu<N>/bin` by default. */
  binDirs?: string[];
}

export interface SimDpu {
  index: number;
  ns: string;
  /** The DPU's address, what SSH dials. */
  address: string;
  /** The host end's address under the plan (not configured unless configureHostSide). */
  hostAddress: string;
  prefixLength: number;
  /** The host end's interface, `tmfifo_net<N>` in the host namespace. */
  tmfifo: string;
  dpuRoot: string;
  binDir: string;
  /** `<dpuRoot>/etc/mlnx-release`, which sessions see as /etc/mlnx-release. */
  releaseFile: string;
  /** `<dpuRoot>/root/.ssh/authorized_keys`. */
  authorizedKeysFile: string;
  /** Adds a public key line to root's authorized_keys (once). */
  authorizeKey(publicKey: string): Promise<void>;
  /** As a reinstall does: a new host key, sshd restarted with it. */
  regenerateHostKey(): Promise<void>;
  stopSshd(): Promise<void>;
  startSshd(): Promise<void>;
  sshdLog(): string;
}

export interface DpuHostsLab {
  hostNs: string;
  outsideNs: string;
  uplink: string;
  uplinkAddress: string;
  dpus: SimDpu[];
  /** ip, sysctl, nft, iptables and ssh acting in the host namespace (iptables only when installed). */
  toolBinDir: string;
  /** Another wrapper directory, without some of the programs (e.g. `['nft']` to force iptables). */
  toolPathWithout(programs: readonly string[]): Promise<string>;
  /** The HTTP server in the outside namespace; it answers with the client address it saw. */
  outsideHttpUrl: string;
  setDefaultRoute(present: boolean): Promise<void>;
  /** Runs a program inside one of the lab's namespaces. */
  execIn(ns: string, argv: string[], timeoutMs?: number): Promise<RunOutput>;
  close(): Promise<void>;
}

let labCounter = 0;

const shellQuote = (word: string): string => `'${word.replaceAll("'", `'\\''`)}'`;

const writeExecutable = async (file: string, body: string): Promise<void> => {
  await writeFile(file, `#!/bin/sh\n${body}\n`);
  await chmod(file, 0o755);
};

const writeToolDir = async (
  directory: string,
  hostNs: string,
  ipPath: string,
  without: readonly string[] = [],
): Promise<void> => {
  await mkdir(directory, { recursive: true });
  for (const tool of HOST_TOOLS) {
    if (without.includes(tool)) continue;
    const real = await resolveSystem(tool);
    if (real === null) continue;
    await writeExecutable(
      path.join(directory, tool),
      `exec ${shellQuote(ipPath)} netns exec ${shellQuote(hostNs)} ${shellQuote(real)} "$@"`,
    );
  }
  for (const tool of PASSTHROUGH_TOOLS) {
    if (without.includes(tool)) continue;
    const real = await resolveSystem(tool);
    if (real !== null) await writeExecutable(path.join(directory, tool), `exec ${shellQuote(real)} "$@"`);
  }
};

const HTTP_SERVER = `
const http = require('node:http');
const [host, port] = process.argv.slice(1);
http.createServer((req, res) => {
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ outside: true, remote: req.socket.remoteAddress }) + '\\n');
}).listen(Number(port), host, () => process.stdout.write('listening\\n'));
`;

const waitForOutput = (
  child: ChildProcess,
  pattern: RegExp,
  output: () => string,
  what: string,
): Promise<void> =>
  new Promise((resolve, reject) => {
    const started = Date.now();
    const check = (): void => {
      if (pattern.test(output())) {
        clearInterval(timer);
        resolve();
      } else if (
        child.exitCode !== null ||
        child.signalCode !== null ||
        Date.now() - started > START_TIMEOUT_MS
      ) {
        clearInterval(timer);
        reject(new Error(`${what} did not start: ${output().trim().slice(-2000)}`));
      }
    };
    const timer = setInterval(check, 25);
  });

const stopChild = async (child: ChildProcess | null): Promise<void> => {
  if (child === null || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  await Promise.race([exited, sleep(2000)]);
  if (child.exitCode === null && child.signalCode === null) {
    child.kill('SIGKILL');
    await Promise.race([exited, sleep(2000)]);
  }
};

/** SIGKILLs every process in `ns` by pid: all of them were started by this lab. */
const killNamespaceProcesses = async (ipPath: string, ns: string): Promise<void> => {
  const listed = await execQuiet(ipPath, ['netns', 'pids', ns]);
  if (listed.code !== 0) return;
  for (const pid of listed.stdout.split('\n').map((line) => Number.parseInt(line, 10))) {
    if (!Number.isInteger(pid) || pid <= 0) continue;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
};

interface DpuPaths {
  base: string;
  dpuRoot: string;
  binDir: string;
  sshdDir: string;
  hostKey: string;
  config: string;
  overlay: string;
}

const sshdConfig = (dpu: SimDpu, paths: DpuPaths): string =>
  [
    'ListenAddress 0.0.0.0',
    'Port 22',
    `HostKey ${paths.hostKey}`,
    'PidFile none',
    'UsePAM no',
    'UseDNS no',
    'PermitRootLogin prohibit-password',
    'PubkeyAuthentication yes',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    `AuthorizedKeysFile ${dpu.authorizedKeysFile}`,
    // The lab lives under /tmp, which is world-writable: sshd's ownership walk would refuse it.
    'StrictModes no',
    'PrintMotd no',
    'PrintLastLog no',
    'MaxStartups 100',
    'LogLevel VERBOSE',
    `SetEnv PATH=${dpu.binDir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin BMA_SIM_SIDE=arm BMA_DPU_ROOT=${dpu.dpuRoot} BMA_DPU_INDEX=${dpu.index} BMA_DPU_RELEASE_FILE=${dpu.releaseFile}`,
    '',
  ].join('\n');

/** /etc and /run views for one DPU's sshd (see the top of this file). */
const prepareOverlay = async (dpu: SimDpu, paths: DpuPaths): Promise<string> => {
  const etcUpper = path.join(paths.overlay, 'etc-upper');
  const runUpper = path.join(paths.overlay, 'run-upper');
  await rm(paths.overlay, { recursive: true, force: true });
  for (const directory of ['etc-upper', 'etc-work', 'run-upper', 'run-work']) {
    await mkdir(path.join(paths.overlay, directory), { recursive: true });
  }
  await mkdir(path.join(runUpper, 'sshd'), { mode: 0o755 });
  await symlink(dpu.releaseFile, path.join(etcUpper, 'mlnx-release'));
  await symlink(path.join(dpu.dpuRoot, 'etc', 'bf.cfg'), path.join(etcUpper, 'bf.cfg'));
  const passwd = (await readFile('/etc/passwd', 'utf8'))
    .split('\n')
    .map((line) => {
      const fields = line.split(':');
      if (fields[0] !== 'root' || fields.length < 7) return line;
      fields[5] = path.join(dpu.dpuRoot, 'root');
      return fields.join(':');
    })
    .join('\n');
  await writeFile(path.join(etcUpper, 'passwd'), passwd, { mode: 0o644 });
  const mount = (target: string, upper: string, work: string): string =>
    `mount -t overlay bm-agent-lab -o ${shellQuote(`lowerdir=${target},upperdir=${upper},workdir=${work}`)} ${target}`;
  return [
    'set -e',
    mount('/etc', etcUpper, path.join(paths.overlay, 'etc-work')),
    mount('/run', runUpper, path.join(paths.overlay, 'run-work')),
  ].join('\n');
};

/** Starts the outside, host and DPU namespaces; everything is undone by close(), also on failure. */
export const startDpuHosts = async (options: StartDpuHostsOptions): Promise<DpuHostsLab> => {
  if (/[\s"'\\]/.test(options.dir))
    throw new Error(`lab directory must not contain blanks or quotes: ${options.dir}`);
  if (!Number.isInteger(options.count) || options.count < 1)
    throw new Error(`count must be >= 1: ${options.count}`);
  const ipPath = (await resolveSystem('ip')) ?? 'ip';
  const sshdPath = (await resolveSystem('sshd')) ?? '/usr/sbin/sshd';
  const unsharePath = (await resolveSystem('unshare')) ?? 'unshare';
  const keygenPath = (await resolveSystem('ssh-keygen')) ?? 'ssh-keygen';
  labCounter += 1;
  const prefix = `bmabf${process.pid}${options.label ?? ''}${labCounter}`;
  const namespaces: string[] = [];
  const children: Array<() => ChildProcess | null> = [];
  let httpServer: ChildProcess | null = null;
  const plan = options.plan ?? DEFAULT_SUBNET_PLAN;

  const ip = (...args: string[]): Promise<string> => must(ipPath, args);
  const addNamespace = async (name: string): Promise<string> => {
    const ns = `${prefix}-${name}`;
    await ip('netns', 'add', ns);
    namespaces.push(ns);
    await ip('-n', ns, 'link', 'set', 'lo', 'up');
    return ns;
  };

  const close = async (): Promise<void> => {
    await stopChild(httpServer).catch(() => undefined);
    for (const child of children) await stopChild(child()).catch(() => undefined);
    for (const ns of namespaces.splice(0).reverse()) {
      await killNamespaceProcesses(ipPath, ns).catch(() => undefined);
      await execQuiet(ipPath, ['netns', 'del', ns]);
    }
  };

  try {
    const outsideNs = await addNamespace('out');
    const hostNs = await addNamespace('host');
    await ip('-n', hostNs, 'link', 'add', UPLINK, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', outsideNs);
    await ip('-n', outsideNs, 'addr', 'add', `${GATEWAY_ADDRESS}/24`, 'dev', 'eth0');
    await ip('-n', outsideNs, 'addr', 'add', `${OUTSIDE_ADDRESS}/32`, 'dev', 'lo');
    await ip('-n', outsideNs, 'link', 'set', 'eth0', 'up');
    await ip('-n', hostNs, 'addr', 'add', `${UPLINK_ADDRESS}/24`, 'dev', UPLINK);
    await ip('-n', hostNs, 'link', 'set', UPLINK, 'up');
    await ip('-n', hostNs, 'route', 'add', 'default', 'via', GATEWAY_ADDRESS, 'dev', UPLINK);

    let httpOutput = '';
    httpServer = spawn(
      ipPath,
      [
        'netns',
        'exec',
        outsideNs,
        process.execPath,
        '-e',
        HTTP_SERVER,
        OUTSIDE_ADDRESS,
        String(OUTSIDE_PORT),
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    httpServer.stdout?.setEncoding('utf8').on('data', (chunk: string) => (httpOutput += chunk));
    httpServer.stderr?.setEncoding('utf8').on('data', (chunk: string) => (httpOutput += chunk));
    await waitForOutput(httpServer, /listening/, () => httpOutput, 'the outside HTTP server');

    const toolBinDir = path.join(options.dir, 'host-tools');
    await writeToolDir(toolBinDir, hostNs, ipPath);
    let variants = 0;

    const dpus: SimDpu[] = [];
    for (let index = 0; index < options.count; index += 1) {
      const subnet = tmfifoSubnet(index, plan);
      const ns = await addNamespace(`dpu${index}`);
      const tmfifo = `tmfifo_net${index}`;
      await ip(
        '-n',
        hostNs,
        'link',
        'add',
        tmfifo,
        'type',
        'veth',
        'peer',
        'name',
        'tmfifo_net0',
        'netns',
        ns,
      );
      await ip('-n', ns, 'addr', 'add', `${subnet.dpuAddress}/${subnet.prefixLength}`, 'dev', 'tmfifo_net0');
      await ip('-n', ns, 'link', 'set', 'tmfifo_net0', 'up');
      await ip('-n', ns, 'route', 'add', 'default', 'via', subnet.hostAddress, 'dev', 'tmfifo_net0');
      if (options.configureHostSide) {
        await ip('-n', hostNs, 'addr', 'add', `${subnet.hostAddress}/${subnet.prefixLength}`, 'dev', tmfifo);
        await ip('-n', hostNs, 'link', 'set', tmfifo, 'up');
      }

      const base = path.join(options.dir, `dpu${index}`);
      const dpuRoot = options.dpuRoots?.[index] ?? path.join(base, 'rootfs');
      const binDir = options.binDirs?.[index] ?? path.join(base, 'bin');
      const paths: DpuPaths = {
        base,
        dpuRoot,
        binDir,
        sshdDir: path.join(base, 'sshd'),
        hostKey: path.join(base, 'sshd', 'ssh_host_ed25519_key'),
        config: path.join(base, 'sshd', 'sshd_config'),
        overlay: path.join(base, 'overlay'),
      };
      for (const directory of [paths.sshdDir, path.join(dpuRoot, 'etc'), binDir]) {
        await mkdir(directory, { recursive: true });
      }
      await mkdir(path.join(dpuRoot, 'root', '.ssh'), { recursive: true, mode: 0o700 });

      let sshd: ChildProcess | null = null;
      let log = '';
      children.push(() => sshd);
      const generateHostKey = async (): Promise<void> => {
        await rm(paths.hostKey, { force: true });
        await rm(`${paths.hostKey}.pub`, { force: true });
        await must(keygenPath, ['-q', '-t', 'ed25519', '-N', '', '-C', `dpu${index}`, '-f', paths.hostKey]);
      };

      const dpu: SimDpu = {
        index,
        ns,
        address: subnet.dpuAddress,
        hostAddress: subnet.hostAddress,
        prefixLength: subnet.prefixLength,
        tmfifo,
        dpuRoot,
        binDir,
        releaseFile: path.join(dpuRoot, 'etc', 'mlnx-release'),
        authorizedKeysFile: path.join(dpuRoot, 'root', '.ssh', 'authorized_keys'),
        authorizeKey: (publicKey) => authorizeKeyIn(dpuRoot, publicKey),
        startSshd: async () => {
          if (sshd !== null && sshd.exitCode === null && sshd.signalCode === null) return;
          await writeFile(paths.config, sshdConfig(dpu, paths));
          const mounts = await prepareOverlay(dpu, paths);
          log = '';
          const child = spawn(
            ipPath,
            [
              'netns',
              'exec',
              ns,
              unsharePath,
              '--mount',
              '--propagation',
              'private',
              '/bin/sh',
              '-c',
              `${mounts}\nexec ${shellQuote(sshdPath)} -D -e -f ${shellQuote(paths.config)}`,
            ],
            { stdio: ['ignore', 'ignore', 'pipe'] },
          );
          sshd = child;
          child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
            log = (log + chunk).slice(-65536);
          });
          await waitForOutput(child, /Server listening on/, () => log, `sshd of dpu${index}`);
        },
        stopSshd: async () => {
          await stopChild(sshd);
          // Sessions outlive the listener; a stopped DPU has none.
          await killNamespaceProcesses(ipPath, ns);
          sshd = null;
        },
        regenerateHostKey: async () => {
          await dpu.stopSshd();
          await generateHostKey();
          await dpu.startSshd();
        },
        sshdLog: () => log,
      };
      await generateHostKey();
      await dpu.startSshd();
      dpus.push(dpu);
    }

    return {
      hostNs,
      outsideNs,
      uplink: UPLINK,
      uplinkAddress: UPLINK_ADDRESS,
      dpus,
      toolBinDir,
      toolPathWithout: async (programs) => {
        variants += 1;
        const directory = path.join(options.dir, `host-tools-${variants}`);
        await writeToolDir(directory, hostNs, ipPath, programs);
        return directory;
      },
      outsideHttpUrl: `http://${OUTSIDE_ADDRESS}:${OUTSIDE_PORT}/`,
      setDefaultRoute: async (present) => {
        if (present) {
          await ip('-n', hostNs, 'route', 'replace', 'default', 'via', GATEWAY_ADDRESS, 'dev', UPLINK);
        } else {
          await execQuiet(ipPath, ['-n', hostNs, 'route', 'del', 'default']);
        }
      },
      execIn: (ns, argv, timeoutMs) => {
        if (!namespaces.includes(ns)) throw new Error(`${ns} is not a namespace of this lab`);
        return execQuiet(ipPath, ['netns', 'exec', ns, ...argv], timeoutMs);
      },
      close,
    };
  } catch (error) {
    await close();
    throw error;
  }
};
