import type { Config } from '../config/options.js';
import { BlueFieldPlugin } from '../hardware/bluefield/plugin.js';
import { createPowerBackend } from '../hardware/generic/power.js';
import type { HardwarePaths } from '../hardware/paths.js';
import type { Logger, LogRing } from '../util/logger.js';
import { diskCommands } from './disk.js';
import { bluefieldCommands } from './bluefield.js';
import { imageCommands, runImageWrite, type ImageCommandDeps } from './image.js';
import { collectFullInventory, inventoryCommands, type InventoryCommandDeps } from './inventory.js';
import { lldpCommands } from './lldp.js';
import { CommandRegistry } from './registry.js';
import { systemCommands, systemLogCommands } from './system.js';
import { workflowCommands } from './workflows.js';

export const hardwarePaths = (config: Config): HardwarePaths => ({
  sys: config.sysRoot,
  dev: config.devRoot,
  proc: config.procRoot,
  run: config.runRoot,
});

export interface RegistryExtras {
  /** The ring the logger also writes to (createLogger's `ring`); system.collect_logs archives it. */
  logRing?: LogRing;
}

export interface AgentCommands {
  registry: CommandRegistry;
  /** The BlueField plugin, whose support level decides whether BlueField steps are offered. */
  bluefield: BlueFieldPlugin;
}

/** Every command the agent offers, whatever front door calls it, and the plugins behind them. */
export const buildCommands = (config: Config, logger: Logger, extras: RegistryExtras = {}): AgentCommands => {
  const paths = hardwarePaths(config);
  const power = createPowerBackend(config.powerBackend, { paths, logger });
  const bluefield = new BlueFieldPlugin({
    paths,
    toolPath: process.env.PATH ?? '',
    stagingDir: config.stagingDir,
    stateDir: config.stateDir,
    dpuSshKey: config.dpuSshKey,
    bfbTimeoutS: config.bfbTimeoutS,
    caPath: config.imageCa,
    fetch: {
      insecure: config.insecure,
      retries: config.imageRetries,
      retryBaseMs: Math.min(1000, config.imageRetryIntervalS * 1000),
      retryMaxMs: config.imageRetryIntervalS * 1000,
      stallTimeoutMs: config.imageStallTimeoutS * 1000,
    },
    logger,
  });
  const inventoryDeps: InventoryCommandDeps = {
    paths,
    bootif: config.bootif,
    collectLldp: config.collectLldp,
    lldpTimeoutS: config.lldpTimeoutS,
    listBlueField: (context) => bluefield.list(context),
  };
  const imageDeps: ImageCommandDeps = {
    paths,
    caPath: config.imageCa,
    insecure: config.insecure,
    stagingDir: config.stagingDir,
    direct: config.imageDirectIo,
    stallTimeoutS: config.imageStallTimeoutS,
    retries: config.imageRetries,
    retryIntervalS: config.imageRetryIntervalS,
    includeLoops: config.includeLoopDisks,
  };
  const registry = new CommandRegistry().register(
    ...systemCommands({ power }),
    ...inventoryCommands(inventoryDeps),
    ...lldpCommands({ paths, defaultTimeoutS: config.lldpTimeoutS }),
    ...systemLogCommands({ paths, logRing: extras.logRing ?? null }),
    ...diskCommands({ paths, includeLoops: config.includeLoopDisks }),
    ...imageCommands(imageDeps),
    ...bluefieldCommands(bluefield),
    ...workflowCommands({
      collectInventory: (params, context) => collectFullInventory(inventoryDeps, params, context),
      writeImage: (params, context) => runImageWrite(imageDeps, params, context),
      bluefield,
    }),
  );
  return { registry, bluefield };
};

export const buildRegistry = (config: Config, logger: Logger, extras: RegistryExtras = {}): CommandRegistry =>
  buildCommands(config, logger, extras).registry;
