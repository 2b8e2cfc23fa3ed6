/**
 * The BlueField hardware plugin: the operations of bluefield.* over the plugin's parts
 * (discovery, MFT/mstflint, the rshim, SSH to the Arm side, NAT). Cards are handled one by one,
 * except BFB installs, which run in parallel (the push and the DPU's own install dominate).
 * Anything that needs the DPU's Arm system goes over SSH through the card's tmfifo with a key the
 * agent makes at boot and hands to the DPU in the bf.cfg of the install.
 */
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { ProgressUpdate } from '../../commands/definition.js';
import type { FetchTextOptions } from '../../image/fetch.js';
import { readImageCa } from '../../image/read-ca.js';
import { AgentError, errorMessage, serializeError } from '../../util/errors.js';
import type { Logger } from '../../util/logger.js';
import type { HardwarePaths } from '../paths.js';
import { mergeBfCfg } from './bfb/bf-cfg.js';
import { BfbValidator } from './bfb/validator.js';
import type { BlueFieldCard, MlxToolSet, ToolRunner } from './contracts.js';
import { discoverCards, selectCard, type DiscoveredCard } from './discover.js';
import { createDpuShell, type DpuShell } from './dpu-shell.js';
import { readFirmware } from './mlx/firmware.js';
import { readMode, setMode } from './mlx/mode.js';
import { DPU_SIDE_DEVICE, readPrivilege, setPrivilege } from './mlx/privhost.js';
import { createLocalRunner, findMlxTools, mlxDevice, toolsForFlavour } from './mlx/tools.js';
import { configureNat, ensureTmfifoAddress, tmfifoSubnet } from './nat.js';
import type {
  BlueFieldOps,
  ChecksumInput,
  DpuExecRequest,
  InstallBfbRequest,
  OpContext,
  OpResult,
  SetHostPrivilegeRequest,
  SetModeRequest,
} from './ops.js';
import { captureLogBaseline, followInstall } from './rshim/follow.js';
import { readMisc } from './rshim/misc.js';
import { preflightRshim } from './rshim/preflight.js';
import { pushBootStream } from './rshim/push.js';
import { ensureAgentKey, type AgentKey } from './ssh-key.js';
import { stageBfb, type StagedBfb } from './stage-bfb.js';

export interface BlueFieldPluginConfig {
  paths: HardwarePaths;
  /** PATH for MFT/mstflint, ssh, ssh-keygen, ip, nft/iptables, cat, bash. */
  toolPath: string;
  stagingDir: string;
  stateDir: string;
  /** An operator's key for the DPUs instead of the one made at boot. */
  dpuSshKey: string | null;
  bfbTimeoutS: number;
  /** PEM bundle for https BFB and checksum servers; the system store when null. */
  caPath: string | null;
  fetch: Omit<FetchTextOptions, 'signal' | 'logger' | 'ca'>;
  logger: Logger;
}

// Tool queries for the list run per card; a wedged tool must not hold the inventory.
const QUERY_TIMEOUT_MS = 60_000;
// mlxconfig set can take a while on a busy card; it still must end.
const SET_TIMEOUT_MS = 180_000;
// Deciding whether the DPU already runs the BFB's version must not cost much when it is down.
const VERSION_PROBE_CONNECT_S = 5;
const VERSION_PROBE_TIMEOUT_MS = 20_000;
const LOG_TAIL_LINES = 10;
const MAX_INSTALL_REBOOTS = 4;

const slotProgress =
  (context: OpContext, slot: string, phase: string) =>
  (update: Omit<ProgressUpdate, 'phase'> & { phase?: string }): void =>
    context.progress({ ...update, phase: `${slot} ${update.phase ?? phase}` });

/** Results of per-card work: the top level mirrors the card when there is one, `devices` always lists them. */
const perCardResult = (devices: OpResult[]): OpResult => {
  const [only] = devices;
  return devices.length === 1 && only ? { ...only, devices } : { devices };
};

const checksumKey = (checksum: ChecksumInput | undefined): string =>
  checksum === undefined
    ? ''
    : typeof checksum === 'string'
      ? checksum
      : `${checksum.os_hash_algo}:${checksum.os_hash_value}`;

/** What the DPU says it runs, compared with what the BFB says it installs. */
const sameRelease = (running: string, version: string): boolean => {
  const release = running.trim();
  return release === version.trim() || release.includes(version.trim());
};

/** The host was refused and the DPU could not do it either: say both. */
const refusedEverywhere = (refusal: AgentError, cause: unknown): AgentError =>
  AgentError.is(cause) && cause.code === 'DPU_UNREACHABLE'
    ? new AgentError(
        'OPERATION_NOT_PERMITTED',
        `${refusal.message}; and the DPU cannot be reached: ${cause.message}`,
        {
          cause,
          details: refusal.details,
        },
      )
    : AgentError.is(cause)
      ? cause
      : new AgentError('INTERNAL', errorMessage(cause), { cause });

export class BlueFieldPlugin implements BlueFieldOps {
  private readonly staged = new Map<string, Promise<StagedBfb>>();
  /** Cards this agent installed a BFB on, so disable_rshim cannot strand a card without an OS. */
  private readonly installed = new Set<string>();
  private key: Promise<AgentKey> | null = null;

  constructor(private readonly config: BlueFieldPluginConfig) {}

  /** IPA's support levels: 0 none, 1 generic, 2 mainline, 3 hardware-specific. */
  async supportLevel(signal?: AbortSignal): Promise<number> {
    const cards = await discoverCards(this.config.paths, {
      ...(signal ? { signal } : {}),
      logger: this.config.logger,
    });
    return cards.length > 0 ? 3 : 0;
  }

  private async cards(context: Pick<OpContext, 'signal' | 'log'>): Promise<DiscoveredCard[]> {
    return discoverCards(this.config.paths, { signal: context.signal, logger: context.log });
  }

  /** The named card, or every card; none at all is BLUEFIELD_NOT_FOUND. */
  private async select(device: string | undefined, context: OpContext): Promise<DiscoveredCard[]> {
    const cards = await this.cards(context);
    if (device !== undefined) return [selectCard(cards, device)];
    if (cards.length === 0) {
      throw new AgentError('BLUEFIELD_NOT_FOUND', 'no BlueField was found in this host', {
        details: { sys: this.config.paths.sys },
      });
    }
    return cards;
  }

  private hostRunner(): ToolRunner {
    return createLocalRunner({ toolPath: this.config.toolPath });
  }

  private agentKey(context: Pick<OpContext, 'signal' | 'log'>): Promise<AgentKey> {
    this.key ??= ensureAgentKey({
      stateDir: this.config.stateDir,
      toolPath: this.config.toolPath,
      signal: context.signal,
      logger: context.log,
    }).catch((error: unknown) => {
      this.key = null;
      throw error;
    });
    return this.key;
  }

  private dpuAddress(card: BlueFieldCard): string | null {
    return card.rshim ? tmfifoSubnet(card.rshim.index).dpuAddress : null;
  }

  private async dpuShell(
    card: BlueFieldCard,
    context: Pick<OpContext, 'signal' | 'log'>,
    connectTimeoutS?: number,
  ): Promise<DpuShell> {
    const host = this.dpuAddress(card);
    if (host === null) {
      throw new AgentError(
        'DPU_UNREACHABLE',
        `the BlueField in ${card.slot} has no rshim, so no tmfifo network to reach its Arm system`,
        { details: { slot: card.slot } },
      );
    }
    // No route to the DPU without the host end's address; NAT is a separate, optional step.
    await ensureTmfifoAddress({
      card,
      toolPath: this.config.toolPath,
      signal: context.signal,
      logger: context.log,
    }).catch((error: unknown) => {
      throw new AgentError(
        'DPU_UNREACHABLE',
        `the host end of ${card.rshim?.tmfifo ?? 'tmfifo'} could not be set up: ${errorMessage(error)}`,
        {
          cause: error,
          details: { slot: card.slot },
        },
      );
    });
    const key = await this.agentKey(context);
    return createDpuShell({
      host,
      keyPath: this.config.dpuSshKey ?? key.privateKeyPath,
      knownHostsPath: key.knownHostsPath,
      toolPath: this.config.toolPath,
      logger: context.log,
      ...(connectTimeoutS === undefined ? {} : { connectTimeoutS }),
    });
  }

  /** `/etc/mlnx-release` of the DPU's installed OS, or null when it cannot be asked. */
  private async runningRelease(card: BlueFieldCard, context: OpContext): Promise<string | null> {
    try {
      const shell = await this.dpuShell(card, context, VERSION_PROBE_CONNECT_S);
      const result = await shell.run('cat', ['/etc/mlnx-release'], {
        signal: context.signal,
        timeoutMs: VERSION_PROBE_TIMEOUT_MS,
      });
      return result.exitCode === 0 && result.stdout.trim() !== '' ? result.stdout.trim() : null;
    } catch (error) {
      context.log.debug({ slot: card.slot, err: error }, 'the DPU could not say which release it runs');
      return null;
    }
  }

  // ---------------------------------------------------------------------------- list

  async list(context: OpContext): Promise<OpResult[]> {
    const cards = await this.cards(context);
    if (cards.length === 0) return [];
    let tools: MlxToolSet | null = null;
    let toolsProblem: string | null = null;
    try {
      tools = await findMlxTools(this.config.toolPath);
    } catch (error) {
      toolsProblem = errorMessage(error);
    }
    const describe = async (card: DiscoveredCard): Promise<OpResult> => {
      const warnings: string[] = toolsProblem ? [toolsProblem] : [];
      const options = { signal: context.signal, timeoutMs: QUERY_TIMEOUT_MS };
      const attempt = async <T>(what: string, read: () => Promise<T>): Promise<T | null> => {
        try {
          return await read();
        } catch (error) {
          if (context.signal.aborted) throw error;
          warnings.push(`${what}: ${errorMessage(error)}`);
          return null;
        }
      };
      let mode = null;
      let privilege = null;
      let firmware = null;
      if (tools && !card.recovery && card.nicFunctions.length > 0) {
        const runner = this.hostRunner();
        const device = mlxDevice(card, tools);
        const toolSet = tools;
        [mode, privilege, firmware] = await Promise.all([
          attempt('mode', () => readMode(runner, toolSet, device, card.generation, options)),
          attempt('host privilege', () => readPrivilege(runner, toolSet, device, options)),
          attempt('firmware', () => readFirmware(runner, toolSet, device, options)),
        ]);
      }
      const misc = card.rshim
        ? await attempt('rshim', () => readMisc(path.join(card.rshim?.path ?? '', 'misc')))
        : null;
      return {
        slot: card.slot,
        pci_address: card.nicFunctions[0] ?? card.rshimFunction ?? card.slot,
        generation: card.generation,
        recovery: card.recovery,
        nic_functions: card.nicFunctions,
        rshim_function: card.rshimFunction,
        rshim: card.rshim?.path ?? null,
        rshim_match: card.rshimMatch,
        tmfifo: card.rshim?.tmfifo ?? null,
        dpu_address: this.dpuAddress(card),
        mst_device: card.mstDevice,
        netdevs: card.netdevs,
        serial: card.serial,
        part_number: card.partNumber,
        description: card.description,
        tools: tools?.flavour ?? null,
        firmware_version: firmware?.fw_version ?? null,
        psid: firmware?.psid ?? null,
        mode: mode ? { current: mode.current, next: mode.next } : null,
        host_privilege: privilege,
        installed_by_agent: this.installed.has(card.slot),
        rshim_state: misc
          ? {
              dev_name: misc.devName,
              dev_info: misc.devInfo,
              display_level: misc.displayLevel,
              boot_timeout_s: misc.bootTimeoutS,
              drop_mode: misc.dropMode,
              bf_mode: misc.bfMode,
              secure_nic_mode: misc.secureNicMode,
            }
          : null,
        rshim_log_tail: misc?.log ? misc.log.slice(-LOG_TAIL_LINES).map((line) => line.raw.trim()) : [],
        warnings,
      };
    };
    // One card after the other: the tools take the card's config lock, and the list stays readable.
    const described: OpResult[] = [];
    for (const card of cards) described.push(await describe(card));
    return described;
  }

  // ---------------------------------------------------------------------------- BFB

  prefetchBfb(
    request: { url: string; checksum?: ChecksumInput | undefined },
    context: OpContext,
  ): Promise<void> {
    return this.stage(request, context).then(() => undefined);
  }

  private stage(
    request: { url: string; checksum?: ChecksumInput | undefined },
    context: OpContext,
  ): Promise<StagedBfb> {
    const key = `${request.url}\n${checksumKey(request.checksum)}`;
    let staged = this.staged.get(key);
    if (!staged) {
      staged = readImageCa(this.config.caPath).then((ca) =>
        stageBfb(
          { url: request.url, ...(request.checksum === undefined ? {} : { checksum: request.checksum }) },
          {
            stagingDir: this.config.stagingDir,
            fetch: { ...this.config.fetch, ca, logger: context.log },
            createValidator: () => new BfbValidator(),
          },
          { signal: context.signal, progress: context.progress },
        ),
      );
      // A failed download is not cached: the next attempt starts afresh.
      staged.catch(() => this.staged.delete(key));
      this.staged.set(key, staged);
    }
    return staged;
  }

  async installBfb(request: InstallBfbRequest, context: OpContext): Promise<OpResult> {
    const cards = await this.select(request.device, context);
    for (const card of cards) {
      if (!card.rshim) {
        throw new AgentError(
          'RSHIM_NOT_FOUND',
          `the BlueField in ${card.slot} has no /dev/rshimN: start the rshim daemon, or check that the rshim is not disabled for the host (INTERNAL_CPU_RSHIM, mlxprivhost --disable_rshim) or owned by the DPU's BMC`,
          { details: { slot: card.slot, dev: this.config.paths.dev } },
        );
      }
    }
    const [staged, key] = await Promise.all([
      this.stage(request, {
        ...context,
        progress: (update) => context.progress({ ...update, phase: `bfb ${update.phase}` }),
      }),
      this.agentKey(context),
    ]);
    const timeoutMs = (request.timeout_s ?? this.config.bfbTimeoutS) * 1000;
    const outcomes = await Promise.allSettled(
      cards.map((card) => this.installOne(card, staged, key, request, timeoutMs, context)),
    );
    const devices = outcomes.map((outcome, index) =>
      outcome.status === 'fulfilled'
        ? outcome.value
        : { slot: cards[index]?.slot ?? null, error: serializeError(outcome.reason) },
    );
    const failed = outcomes.find(
      (outcome): outcome is PromiseRejectedResult => outcome.status === 'rejected',
    );
    if (failed) {
      const reason: unknown = failed.reason;
      if (AgentError.is(reason)) {
        throw new AgentError(reason.code, reason.message, {
          cause: reason.cause,
          details: { ...reason.details, devices },
        });
      }
      throw reason;
    }
    return {
      ...perCardResult(devices),
      bfb: {
        url: staged.url,
        bytes: staged.bytes,
        checksum: staged.checksum,
        checksum_verified: staged.checksum_verified,
        version: staged.summary.version,
      },
    };
  }

  private async installOne(
    card: DiscoveredCard,
    staged: StagedBfb,
    key: AgentKey,
    request: InstallBfbRequest,
    timeoutMs: number,
    context: OpContext,
  ): Promise<OpResult> {
    const rshim = card.rshim;
    if (!rshim) throw new AgentError('RSHIM_NOT_FOUND', `the BlueField in ${card.slot} has no rshim`);
    const progress = slotProgress(context, card.slot, 'install');
    const version = staged.summary.version;
    if (version !== null && request.force !== true) {
      const running = await this.runningRelease(card, context);
      if (running !== null && sameRelease(running, version)) {
        context.log.info({ slot: card.slot, version }, 'the DPU already runs this BFB: install skipped');
        return {
          slot: card.slot,
          rshim: rshim.path,
          skipped: 'already installed',
          arm_running: true,
          version,
          running: running,
          bytes: 0,
          seconds: 0,
          log_tail: [],
        };
      }
    }
    const preflight = await preflightRshim(rshim.path, this.config.paths);
    const env = { PATH: this.config.toolPath };
    const cfgText = await mergeBfCfg(
      { conductorCfg: request.bf_cfg ?? null, agentPublicKey: this.config.dpuSshKey ? null : key.publicKey },
      { env, signal: context.signal },
    );
    const cfgPath =
      cfgText === ''
        ? null
        : path.join(this.config.stagingDir, `bf-${card.slot.replaceAll(':', '-')}-${process.pid}.cfg`);
    if (cfgPath) await writeFile(cfgPath, cfgText, { mode: 0o600 });
    const started = performance.now();
    try {
      const baseline = await captureLogBaseline(preflight.miscPath, { signal: context.signal });
      if (!baseline.displayLevelApplied) {
        context.log.warn(
          { slot: card.slot },
          'DISPLAY_LEVEL 2 did not show in misc: the install may not be followable',
        );
      }
      context.log.info(
        { slot: card.slot, rshim: rshim.path, bytes: staged.bytes, version },
        'pushing the BFB',
      );
      const push = await pushBootStream({
        bootPath: preflight.bootPath,
        bfbPath: staged.file,
        cfgPath,
        paths: this.config.paths,
        bootTimeoutS: preflight.misc.bootTimeoutS,
        env,
        signal: context.signal,
        onProgress: (p) =>
          progress({
            phase: 'push',
            done: p.bytes,
            total: p.total,
            unit: 'bytes',
            rate: Math.round(p.rateBytesPerS),
          }),
      });
      // A small BFB is pushed before the first poll: the conductor still sees the whole of it.
      progress({
        phase: 'push',
        done: push.bytes,
        total: push.bytes,
        unit: 'bytes',
        rate: Math.round(push.rateBytesPerS),
      });
      let lines = 0;
      const deadline = Date.now() + timeoutMs;
      const followFrom = (lines_: string[] | null, budgetMs: number) =>
        followInstall({
          miscPath: preflight.miscPath,
          baseline: lines_ === null ? baseline : { lines: lines_, displayLevelApplied: true },
          timeoutMs: budgetMs,
          signal: context.signal,
          onLine: (line) => {
            lines += 1;
            progress({ phase: 'dpu log', done: lines, unit: 'steps', message: line.raw.trim() });
          },
        });
      let follow = await followFrom(null, timeoutMs);
      const installMarker = follow.marker;
      // `Rebooting...` ends the installer, not the install: NAT, the setup script and SSH need the
      // installed OS, which says `Linux up` / `DPU is ready` once it has booted (NVIDIA's advice
      // too). A DPU that reboots more than once (NIC firmware reset) is followed through each.
      for (let reboots = 0; follow.marker === 'Rebooting...' && reboots < MAX_INSTALL_REBOOTS; reboots += 1) {
        try {
          follow = await followFrom(follow.logTail, Math.max(1, deadline - Date.now()));
        } catch (error) {
          if (AgentError.is(error) && error.code === 'BFB_INSTALL_TIMEOUT') {
            throw new AgentError(
              'BFB_INSTALL_TIMEOUT',
              `the BFB installed and the DPU rebooted, but its installed OS did not report ready within ${Math.round(timeoutMs / 1000)} s; check its console (${rshim.path}/console)`,
              { cause: error, details: { ...error.details, slot: card.slot, install_marker: installMarker } },
            );
          }
          throw error;
        }
      }
      this.installed.add(card.slot);
      return {
        slot: card.slot,
        rshim: rshim.path,
        bytes: push.bytes,
        push_seconds: Math.round(push.durationMs) / 1000,
        rate_bytes_per_s: Math.round(push.rateBytesPerS),
        seconds: Math.round(performance.now() - started) / 1000,
        marker: follow.marker,
        install_marker: installMarker,
        // BF3 in NIC mode boots no Arm OS: nothing to SSH into until the card is in DPU mode.
        arm_running: follow.marker !== 'In Enhanced NIC mode',
        log_tail: follow.logTail,
        skipped: null,
        version,
        bf_cfg_bytes: Buffer.byteLength(cfgText),
      };
    } finally {
      if (cfgPath) await rm(cfgPath, { force: true });
    }
  }

  // ---------------------------------------------------------------------------- mode, privilege

  async setMode(request: SetModeRequest, context: OpContext): Promise<OpResult> {
    const cards = await this.select(request.device, context);
    const tools = await findMlxTools(this.config.toolPath);
    const devices: OpResult[] = [];
    for (const card of cards) {
      const options = {
        signal: context.signal,
        timeoutMs: SET_TIMEOUT_MS,
        ...(request.hide_port2_pf === undefined ? {} : { hidePort2Pf: request.hide_port2_pf }),
      };
      slotProgress(
        context,
        card.slot,
        'mode',
      )({ done: 0, unit: 'steps', message: `setting ${request.mode} mode` });
      let ranOn: 'host' | 'dpu' = 'host';
      let result;
      try {
        result = await setMode(
          this.hostRunner(),
          tools,
          mlxDevice(card, tools),
          card.generation,
          request.mode,
          options,
        );
      } catch (error) {
        if (!AgentError.is(error) || error.code !== 'OPERATION_NOT_PERMITTED') throw error;
        context.log.info(
          { slot: card.slot },
          'the firmware refused the mode change from the host: running it on the DPU',
        );
        const shell = await this.dpuShell(card, context).catch((cause: unknown) => {
          throw new AgentError(
            'OPERATION_NOT_PERMITTED',
            `${error.message}; and the DPU cannot be reached: ${errorMessage(cause)}`,
            { cause, details: error.details },
          );
        });
        result = await setMode(
          shell,
          toolsForFlavour('mft'),
          DPU_SIDE_DEVICE,
          card.generation,
          request.mode,
          options,
        ).catch((cause: unknown) => {
          throw refusedEverywhere(error, cause);
        });
        ranOn = 'dpu';
      }
      devices.push({ slot: card.slot, generation: card.generation, ...result, ran_on: ranOn });
    }
    return perCardResult(devices);
  }

  async setHostPrivilege(request: SetHostPrivilegeRequest, context: OpContext): Promise<OpResult> {
    const cards = await this.select(request.device, context);
    const tools = await findMlxTools(this.config.toolPath);
    const flags = {
      ...(request.disable_port_owner === undefined ? {} : { disable_port_owner: request.disable_port_owner }),
      ...(request.disable_rshim === undefined ? {} : { disable_rshim: request.disable_rshim }),
      ...(request.disable_tracer === undefined ? {} : { disable_tracer: request.disable_tracer }),
      ...(request.disable_counter_rd === undefined ? {} : { disable_counter_rd: request.disable_counter_rd }),
    };
    const devices: OpResult[] = [];
    for (const card of cards) {
      if (request.level === 'restricted' && request.disable_rshim === true && request.force !== true) {
        // Without the rshim the host can never push a BFB again: only allow it over an installed OS.
        const installed =
          this.installed.has(card.slot) || (await this.runningRelease(card, context)) !== null;
        if (!installed) {
          throw new AgentError(
            'RSHIM_DISABLE_REFUSED',
            `disable_rshim on ${card.slot} would cut the host off the rshim, and no installed BFB was seen on this DPU; install one first or pass force`,
            { details: { slot: card.slot } },
          );
        }
      }
      let dpu: DpuShell | null = null;
      try {
        dpu = await this.dpuShell(card, context);
      } catch (error) {
        context.log.debug({ slot: card.slot, err: error }, 'no SSH to the DPU for host-privilege changes');
      }
      slotProgress(
        context,
        card.slot,
        'host privilege',
      )({ done: 0, unit: 'steps', message: `setting ${request.level}` });
      const result = await setPrivilege(
        this.hostRunner(),
        dpu,
        tools,
        mlxDevice(card, tools),
        request.level,
        flags,
        {
          signal: context.signal,
          timeoutMs: SET_TIMEOUT_MS,
          dpuTools: toolsForFlavour('mft'),
        },
      ).catch((error: unknown) => {
        // Only the retry on the Arm side speaks SSH: its failure means the host was refused first.
        if (AgentError.is(error) && error.code === 'DPU_UNREACHABLE') {
          throw new AgentError(
            'OPERATION_NOT_PERMITTED',
            `the firmware refused the host-privilege change from the host, and the DPU's Arm system could not be reached to run it there: ${error.message}`,
            { cause: error, details: { slot: card.slot } },
          );
        }
        throw error;
      });
      devices.push({ slot: card.slot, ...result });
    }
    return perCardResult(devices);
  }

  // ---------------------------------------------------------------------------- NAT, DPU shell

  async configureNat(request: { device?: string | undefined }, context: OpContext): Promise<OpResult> {
    const cards = await this.select(request.device, context);
    const devices: OpResult[] = [];
    for (const card of cards) {
      if (!card.rshim) {
        throw new AgentError(
          'NAT_FAILED',
          `the BlueField in ${card.slot} has no rshim, so no tmfifo interface to set up`,
          {
            details: { slot: card.slot },
          },
        );
      }
      const result = await configureNat({
        card,
        toolPath: this.config.toolPath,
        signal: context.signal,
        logger: context.log,
      });
      devices.push({ slot: card.slot, ...result });
    }
    return perCardResult(devices);
  }

  async dpuExec(request: DpuExecRequest, context: OpContext): Promise<OpResult> {
    const cards = await this.select(request.device, context);
    const devices: OpResult[] = [];
    for (const card of cards) {
      const shell = await this.dpuShell(card, context);
      let lines = 0;
      const progress = slotProgress(context, card.slot, 'dpu exec');
      const result = await shell.runScript(request.script, {
        signal: context.signal,
        ...(request.timeout_s === undefined ? {} : { timeoutMs: request.timeout_s * 1000 }),
        onLine: (stream, line) => {
          lines += 1;
          progress({ phase: stream, done: lines, unit: 'steps', message: line });
        },
      });
      devices.push({ slot: card.slot, host: shell.host, ...result });
    }
    return perCardResult(devices);
  }
}
