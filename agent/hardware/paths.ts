import path from 'node:path';

/**
 * Where the agent looks for hardware. Tests and the demo point these at prepared trees; nothing
 * in the agent names /sys, /dev, /proc or /run directly.
 */
export interface HardwarePaths {
  sys: string;
  dev: string;
  proc: string;
  /** Where udev keeps its database (`<run>/udev/data`); `/run` when absent. */
  run?: string;
}

export const DEFAULT_PATHS: HardwarePaths = { sys: '/sys', dev: '/dev', proc: '/proc', run: '/run' };

export const sysPath = (paths: HardwarePaths, ...parts: string[]): string => path.join(paths.sys, ...parts);
export const devPath = (paths: HardwarePaths, ...parts: string[]): string => path.join(paths.dev, ...parts);
export const procPath = (paths: HardwarePaths, ...parts: string[]): string => path.join(paths.proc, ...parts);
export const runPath = (paths: HardwarePaths, ...parts: string[]): string =>
  path.join(paths.run ?? '/run', ...parts);
