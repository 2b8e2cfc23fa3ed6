import { AgentChannel } from '../channel/agent-channel.js';
import { readIdentity } from '../channel/identity.js';
import { buildRegistry, hardwarePaths } from '../commands/catalog.js';
import { CommandEngine } from '../commands/engine.js';
import { startStatusConsole } from '../console/status-screen.js';
import type { Config } from '../config/options.js';
import { AgentError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { LogForwarder } from '../util/logger.js';
import { AGENT_VERSION } from '../version.js';
import { prepare } from './context.js';

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

/** The daemon: dial the conductor and serve it until stopped by a signal. */
export const runDaemon = async (flags: Record<string, unknown>): Promise<number> => {
  const forwarder = new LogForwarder();
  const { loaded, logger } = await prepare(flags, { stream: 'stdout', forwarder });
  const { config } = loaded;
  if (!config.conductorUrl) {
    throw new AgentError(
      'INVALID_CONFIG',
      'no conductor to serve: set the kernel argument bma-conductor-url or --conductor-url',
      {
        details: { setting: 'conductor-url' },
      },
    );
  }
  const paths = hardwarePaths(config);
  const engine = new CommandEngine(buildRegistry(config, logger), { logger, deliveryAcknowledged: true });
  const channel = new AgentChannel({
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
  });
  logger.info(
    { version: AGENT_VERSION, conductor: config.conductorUrl, power_backend: config.powerBackend },
    'bm-agent starting',
  );
  const statusConsole = config.statusConsole
    ? startStatusConsole({
        devices: config.statusConsole,
        forcePlain: config.statusDumb,
        conductorUrl: config.conductorUrl,
        bootif: config.bootif,
        agentVersion: AGENT_VERSION,
        paths,
        link: channel,
        commands: engine,
        logs: forwarder,
        logger,
        term: process.env.TERM,
      })
    : null;
  channel.start();
  if (config.inspectAtBoot) startBootInspection(engine, config, logger);
  await new Promise<void>((resolve) => {
    const shutdown = (signal: NodeJS.Signals): void => {
      logger.info({ signal }, 'stopping');
      void channel
        .stop()
        .then(() => statusConsole?.stop())
        .then(resolve);
    };
    process.once('SIGTERM', shutdown);
    process.once('SIGINT', shutdown);
  });
  return 0;
};
