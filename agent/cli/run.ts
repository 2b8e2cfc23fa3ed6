import { AgentChannel } from '../channel/agent-channel.js';
import { readIdentity } from '../channel/identity.js';
import { buildCommands, hardwarePaths } from '../commands/catalog.js';
import { CommandEngine } from '../commands/engine.js';
import { startStatusConsole } from '../console/status-screen.js';
import type { Config } from '../config/options.js';
import { AgentError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { LogForwarder, LogRing } from '../util/logger.js';
import { IpaDoor } from '../ipa/door.js';
import { AGENT_VERSION } from '../version.js';
import { exitCodeFor, prepare } from './context.js';

/**
 * bma-inspect=1: inspection starts at boot rather than when the conductor asks, so the BFB
 * download (the long pole) overlaps the DHCP, the dial and the inventory. The result waits in the
 * outbox like any other until the conductor has it.
 */
const startBootInspection = (engine: CommandEngine, config: Config, logger: Logger): void => {
  const params: Record<string, unknown> = { lldp: config.collectLldp };
  if (config.bfbUrl) {
    params.bfb = { url: config.bfbUrl, ...(config.bfbChecksum ? { checksum: config.bfbChecksum } : {}) };
  }
  const outcome = engine.run('agent:inspect', 'inspect.run', params);
  if (outcome.ok)
    logger.info({ command_id: 'agent:inspect', bfb: config.bfbUrl }, 'inspection started at boot');
  else logger.error({ rejection: outcome.rejection }, 'the boot-time inspection could not start');
};

/**
 * The daemon: serve the conductor over the WebSocket channel (bma-conductor-url), and Ironic the
 * way ironic-python-agent does (ipa-api-url, ipa-inspection-callback-url), either or both, until
 * stopped by a signal. Both front doors share one engine, so one command runs at a time whoever
 * asked for it.
 */
export const runDaemon = async (flags: Record<string, unknown>): Promise<number> => {
  const forwarder = new LogForwarder();
  const ring = new LogRing();
  const { loaded, logger } = await prepare(flags, { stream: 'stdout', forwarder, ring });
  const { config } = loaded;
  const ironic = config.ironicApiUrl !== null || config.inspectionCallbackUrl !== null;
  if (!config.conductorUrl && !ironic) {
    throw new AgentError(
      'INVALID_CONFIG',
      'no conductor to serve: set the kernel argument bma-conductor-url (WebSocket conductor) or ipa-api-url (OpenStack Ironic), or the matching flags',
      {
        details: { setting: 'conductor-url' },
      },
    );
  }
  const paths = hardwarePaths(config);
  const { registry, bluefield } = buildCommands(config, logger, { logRing: ring });
  // Results wait in the outbox for the channel's acknowledgement; Ironic's door has none to wait for.
  const engine = new CommandEngine(registry, { logger, deliveryAcknowledged: config.conductorUrl !== null });
  const door = ironic
    ? new IpaDoor({
        config,
        engine,
        bluefieldPresent: async () => (await bluefield.supportLevel()) > 0,
        agentVersion: AGENT_VERSION,
        logger,
      })
    : null;
  const channel = config.conductorUrl
    ? new AgentChannel({
        url: config.conductorUrl,
        insecure: config.insecure,
        caPath: config.conductorCa,
        pin: config.conductorPin,
        engine,
        identity: () => readIdentity(paths),
        logger,
        logForwarder: forwarder,
        agentVersion: AGENT_VERSION,
        bootif: config.bootif,
        nodeUuid: config.nodeUuid,
        pingIntervalMs: config.pingIntervalS * 1000,
        pongTimeoutMs: config.pongTimeoutS * 1000,
        backoffMinMs: config.backoffMinS * 1000,
        backoffMaxMs: config.backoffMaxS * 1000,
      })
    : null;
  logger.info(
    {
      version: AGENT_VERSION,
      conductor: config.conductorUrl,
      ironic: config.ironicApiUrl,
      inspector: config.inspectionCallbackUrl,
      power_backend: config.powerBackend,
    },
    'bm-agent starting',
  );
  const link = channel ?? door?.linkSource() ?? null;
  const statusConsole = config.statusConsole
    ? startStatusConsole({
        devices: config.statusConsole,
        forcePlain: config.statusDumb,
        conductorUrl: config.conductorUrl ?? config.ironicApiUrl ?? config.inspectionCallbackUrl,
        bootif: config.bootif,
        agentVersion: AGENT_VERSION,
        paths,
        ...(link ? { link } : {}),
        commands: engine,
        logs: forwarder,
        logger,
        term: process.env.TERM,
      })
    : null;
  channel?.start();
  if (config.inspectAtBoot) startBootInspection(engine, config, logger);
  return new Promise<number>((resolve) => {
    // The daemon lives until a signal, even when nothing else holds the event loop (inspection
    // only): exiting would have the ramdisk's supervisor start it again and inspect again.
    const keepAlive = setInterval(() => undefined, 2 ** 30);
    let stopping = false;
    const shutdown = (reason: string, code: number): void => {
      if (stopping) return;
      stopping = true;
      logger.info({ reason }, 'stopping');
      void Promise.all([channel?.stop(), door?.stop()])
        .then(() => statusConsole?.stop())
        .then(() => {
          clearInterval(keepAlive);
          resolve(code);
        });
    };
    // IPA exits when Ironic never knew the node; the ramdisk's supervisor starts it again. A
    // setting found unusable only now (a certificate without its key) exits 2, as at start.
    door?.start().catch((error: unknown) => {
      logger.error({ err: error }, 'the Ironic front door stopped');
      shutdown('ironic', exitCodeFor(error));
    });
    process.once('SIGTERM', () => shutdown('SIGTERM', 0));
    process.once('SIGINT', () => shutdown('SIGINT', 0));
  });
};
