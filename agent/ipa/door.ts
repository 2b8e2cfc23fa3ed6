/**
 * The ironic-python-agent front door, in IPA's order: inspection callback (when configured), lookup,
 * the agent API Ironic calls, then heartbeats until the agent stops. Every action it takes (the
 * inventory, the logs, whatever Ironic asks for) runs as a registry command through the engine the
 * WebSocket channel would use, so there is one implementation of each.
 */
import { readFile } from 'node:fs/promises';
import type { CommandEngine } from '../commands/engine.js';
import type { Config } from '../config/options.js';
import type { CommandRecord } from '../protocol/schema.js';
import { readCaBundle } from '../image/read-ca.js';
import { AgentError, errorMessage } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { resolveCallbackUrl } from './advertise.js';
import { startIpaApiServer, type IpaApiServer } from './api-server.js';
import { IpaSession } from './contracts.js';
import { IpaExtensions } from './extensions.js';
import { Heartbeater } from './heartbeater.js';
import { buildInspectionPayload, postInspection } from './inspection.js';
import { IronicClient } from './ironic-client.js';
import { IronicStatusTracker } from './ironic-status.js';
import { lookupNode } from './lookup.js';
import type { ChannelState, ChannelStatus } from '../channel/agent-channel.js';
import type { LinkSource } from '../console/status-model.js';
import type { Inventory } from '../hardware/generic/inventory/types.js';
import type { IronicState, IronicStatus } from './ironic-status.js';

export interface IpaDoorOptions {
  config: Config;
  engine: CommandEngine;
  /** Whether a BlueField is in this host: its clean and deploy steps are offered only then. */
  bluefieldPresent: () => Promise<boolean>;
  agentVersion: string;
  logger: Logger;
}

/** IPA's default collectors; `pci-devices` adds nothing here (the payload always carries them). */
const COLLECTORS = ['default', 'logs'] as const;

/** Re-lookups after Ironic wiped the token need not wait longer than a heartbeat would. */
const relookupMaxIntervalMs = (session: IpaSession, intervalMs: number): number =>
  Math.max(intervalMs, Math.min(60_000, session.heartbeatTimeoutS * 300));

const isEphemeralBindError = (error: unknown): boolean => {
  const code = (error as NodeJS.ErrnoException | null)?.code;
  return code === 'EAFNOSUPPORT' || code === 'EADDRNOTAVAIL';
};

const LINK_STATES: Record<IronicState, ChannelState> = {
  idle: 'idle',
  'looking-up': 'connecting',
  heartbeating: 'ready',
  retrying: 'waiting',
  stopped: 'stopped',
};

const asChannelStatus = (status: IronicStatus): ChannelStatus => ({
  state: LINK_STATES[status.state],
  nodeUuid: status.nodeUuid,
  connectedSince: status.lastHeartbeatAt,
  lastError: status.lastError,
  lastDisconnect: null,
  reconnects: 0,
  attempts: status.attempts,
  retryAt: status.nextAttemptAt,
});

export class IpaDoor {
  readonly session: IpaSession;
  readonly status = new IronicStatusTracker();
  private readonly controller = new AbortController();
  private server: IpaApiServer | null = null;
  private heartbeater: Heartbeater | null = null;
  private running: Promise<void> | null = null;
  private commandSeq = 0;

  constructor(private readonly options: IpaDoorOptions) {
    this.session = new IpaSession({
      token: options.config.ipaAgentToken,
      nodeUuid: options.config.nodeUuid,
    });
  }

  /**
   * Runs the sequence in the background. A lookup that runs out of time rejects `done`: the
   * caller exits and the ramdisk's supervisor starts the agent again, as IPA's service does.
   */
  start(): Promise<void> {
    this.running ??= this.run();
    return this.running;
  }

  async stop(): Promise<void> {
    this.controller.abort();
    await this.heartbeater?.stop();
    await this.server?.close();
    await this.running?.catch(() => undefined);
    this.status.update({ state: 'stopped' });
  }

  /** Ironic's side of things in the channel's terms, for the console status screen. */
  linkSource(): LinkSource {
    return {
      status: () => asChannelStatus(this.status.snapshot()),
      onStateChange: (listener) => this.status.onChange((status) => listener(asChannelStatus(status))),
    };
  }

  private get log(): Logger {
    return this.options.logger;
  }

  /** One registry command through the engine, as any front door runs it. */
  private async runCommand(name: string, params: Record<string, unknown>): Promise<CommandRecord> {
    const id = `ipa:${name}:${++this.commandSeq}`;
    const outcome = this.options.engine.run(id, name, params);
    if (!outcome.ok)
      throw new AgentError('INTERNAL', `${name} could not start: ${JSON.stringify(outcome.rejection)}`);
    const record = await this.options.engine.wait(id);
    this.options.engine.acknowledge(id);
    if (!record) throw new AgentError('INTERNAL', `${name} left no record`);
    return record;
  }

  private async inventory(): Promise<Inventory> {
    const record = await this.runCommand('inventory.collect', { lldp: this.options.config.collectLldp });
    const inventory = (record.result as { inventory?: Inventory } | null)?.inventory;
    if (record.status !== 'SUCCEEDED' || !inventory)
      throw new AgentError(
        'INVENTORY_FAILED',
        `the inventory for Ironic could not be collected: ${record.error?.message ?? record.status}`,
        { details: { error: record.error } },
      );
    return inventory;
  }

  private async run(): Promise<void> {
    const { config } = this.options;
    const signal = this.controller.signal;
    const inventory = await this.inventory();
    // Ironic and the inspector are verified with the conductor's CA: read once for both.
    const ca = await readCaBundle(config.conductorCa, 'bma-conductor-ca', 'Ironic and the inspector');

    if (config.inspectionCallbackUrl) {
      const uuid = await this.inspect(inventory, config.inspectionCallbackUrl, ca);
      if (uuid && !this.session.nodeUuid) this.session.nodeUuid = uuid;
    }
    if (!config.ironicApiUrl) {
      this.log.info('no ipa-api-url: inspection done, no lookup or heartbeats');
      return;
    }

    const client = new IronicClient(
      {
        apiUrl: config.ironicApiUrl,
        apiVersion: config.ipaApiVersion,
        insecure: config.insecure,
        requestId: config.ipaGlobalRequestId,
        logger: this.log,
      },
      ca,
    );
    const macs = inventory.interfaces.map((nic) => nic.mac_address).filter((mac): mac is string => !!mac);
    const lookup = (maxIntervalMs?: number) =>
      lookupNode({
        client,
        session: this.session,
        macs,
        nodeUuid: this.session.nodeUuid,
        timeoutMs: config.ipaLookupTimeoutS * 1000,
        intervalMs: config.ipaLookupIntervalS * 1000,
        ...(maxIntervalMs === undefined ? {} : { maxIntervalMs }),
        signal,
        logger: this.log,
        status: this.status,
      });
    const found = await lookup();
    this.log.info(
      { node_uuid: found.nodeUuid, token: found.token, heartbeat_timeout_s: this.session.heartbeatTimeoutS },
      'Ironic knows this node',
    );

    const tls = await this.readTls();
    const extensions = new IpaExtensions({
      engine: this.options.engine,
      session: this.session,
      bluefieldPresent: this.options.bluefieldPresent,
      logger: this.log,
    });
    this.server = await this.listen(extensions, tls);
    const callbackUrl = await resolveCallbackUrl({
      apiUrl: config.ironicApiUrl,
      protocol: tls ? 'https' : config.ipaAdvertiseProtocol,
      host: config.ipaAdvertiseHost,
      port: config.ipaAdvertisePort ?? this.server.port,
      signal,
      logger: this.log,
    });
    this.log.info({ callback_url: callbackUrl }, 'agent API listening for Ironic');

    const heartbeater: Heartbeater = new Heartbeater({
      client,
      session: this.session,
      callbackUrl: () => callbackUrl,
      agentVersion: this.options.agentVersion,
      ...(tls ? { verifyCa: tls.cert.toString('utf8') } : {}),
      logger: this.log,
      status: this.status,
      // Ironic moves a step on only at a heartbeat; IPA keeps the one after a command 5 s from the
      // last, which costs each deploy seconds of idling. Two keep a burst of quick commands cheap.
      forceSpacingMs: 2_000,
      // Ironic wipes the token whenever it reboots or powers the node off. A real node is gone by
      // then; one that is still up (fake power, a node kept running) finds its node again.
      onTokenRejected: async () => {
        for (;;) {
          try {
            await lookup(relookupMaxIntervalMs(this.session, config.ipaLookupIntervalS * 1000));
            break;
          } catch (error) {
            if (signal.aborted) return;
            this.log.warn({ err: error }, 'looking the node up again after Ironic dropped the token');
          }
        }
        if (signal.aborted) return;
        extensions.startSession();
        heartbeater.start();
      },
    });
    this.heartbeater = heartbeater;
    heartbeater.start();
  }

  private async listen(
    extensions: IpaExtensions,
    tls: { cert: Buffer; key: Buffer } | null,
  ): Promise<IpaApiServer> {
    const { config } = this.options;
    const serve = (host: string) =>
      startIpaApiServer({
        host,
        port: config.ipaListenPort,
        ...(tls ? { tls } : {}),
        session: this.session,
        extensions,
        agentVersion: this.options.agentVersion,
        logger: this.log,
        onCommandFinished: () => this.heartbeater?.force(),
      });
    if (config.ipaListenHost) return serve(config.ipaListenHost);
    // IPA's default: every address, IPv6 too when the kernel has it.
    try {
      return await serve('::');
    } catch (error) {
      if (!isEphemeralBindError(error)) throw error;
      return serve('0.0.0.0');
    }
  }

  private async readTls(): Promise<{ cert: Buffer; key: Buffer } | null> {
    const { ipaTlsCert, ipaTlsKey } = this.options.config;
    if (!ipaTlsCert && !ipaTlsKey) return null;
    if (!ipaTlsCert || !ipaTlsKey)
      throw new AgentError('INVALID_CONFIG', 'bma-ipa-tls-cert and bma-ipa-tls-key go together: set both', {
        details: { setting: ipaTlsCert ? 'ipa-tls-key' : 'ipa-tls-cert' },
      });
    try {
      return { cert: await readFile(ipaTlsCert), key: await readFile(ipaTlsKey) };
    } catch (error) {
      throw new AgentError(
        'INVALID_CONFIG',
        `the agent API certificate cannot be read: ${errorMessage(error)}`,
        {
          details: { cert: ipaTlsCert, key: ipaTlsKey },
          cause: error,
        },
      );
    }
  }

  /** IPA's inspection: a failure is logged and the lookup goes on without the node UUID. */
  private async inspect(inventory: Inventory, url: string, ca: Buffer | null): Promise<string | null> {
    const errors: string[] = [];
    let logs: string | null = null;
    const collected = await this.runCommand('system.collect_logs', {}).catch((error: unknown) => {
      errors.push(`logs: ${errorMessage(error)}`);
      return null;
    });
    if (collected?.status === 'SUCCEEDED')
      logs = String((collected.result as { archive?: unknown } | null)?.archive ?? '') || null;
    else if (collected) errors.push(`logs: ${collected.error?.message ?? collected.status}`);
    const payload = buildInspectionPayload({
      inventory,
      bootInterface: this.options.config.bootif,
      collectors: COLLECTORS,
      errors,
      logs,
    });
    const outcome = await postInspection({
      url,
      payload,
      tls: { ca, insecure: this.options.config.insecure },
      signal: this.controller.signal,
      logger: this.log,
    });
    if (!outcome.ok) {
      this.log.error(
        { status: outcome.status, error: outcome.error },
        'the inspection data was not accepted',
      );
      return null;
    }
    this.log.info({ node_uuid: outcome.uuid }, 'inspection data accepted');
    return outcome.uuid;
  }
}
