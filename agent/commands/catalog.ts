import type { Config } from '../config/options.js';
import { createPowerBackend } from '../hardware/generic/power.js';
import type { HardwarePaths } from '../hardware/paths.js';
import type { Logger } from '../util/logger.js';
import { diskCommands } from './disk.js';
import { imageCommands } from './image.js';
import { inventoryCommands } from './inventory.js';
import { lldpCommands } from './lldp.js';
import { CommandRegistry } from './registry.js';
import { systemCommands } from './system.js';

export const hardwarePaths = (config: Config): HardwarePaths => ({
  sys: config.sysRoot,
  dev: config.devRoot,
  proc: config.procRoot,
  run: config.runRoot,
});

/** Every command the agent offers, whatever front door calls it. */
export const buildRegistry = (config: Config, logger: Logger): CommandRegistry => {
  const paths = hardwarePaths(config);
  const power = createPowerBackend(config.powerBackend, { paths, logger });
  return new CommandRegistry().register(
    ...systemCommands({ power }),
    ...inventoryCommands({
      paths,
      bootif: config.bootif,
      collectLldp: config.collectLldp,
      lldpTimeoutS: config.lldpTimeoutS,
    }),
    ...lldpCommands({ paths, defaultTimeoutS: config.lldpTimeoutS }),
    ...diskCommands({ paths }),
    ...imageCommands({
      paths,
      caPath: config.imageCa,
      insecure: config.insecure,
      stagingDir: config.stagingDir,
      direct: config.imageDirectIo,
      stallTimeoutS: config.imageStallTimeoutS,
      retries: config.imageRetries,
      retryIntervalS: config.imageRetryIntervalS,
    }),
  );
};
