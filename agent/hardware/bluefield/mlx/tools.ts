/**
 * NVIDIA's configuration tools come in two flavours with the same behaviour and different names:
 * MFT (mlxconfig, mlxprivhost, flint, mst) and the open mstflint package (mstconfig, mstprivhost,
 * mstflint). This module picks the flavour, names the device the tools address, and runs them
 * through a ToolRunner so the same code works on the host and, over SSH, on the DPU's Arm.
 */
import { AgentError } from '../../../util/errors.js';
import {
  findOnPath,
  runProcess,
  processFailureDetails,
  type ProcessResult,
  type RunProcess,
} from '../../../util/run-process.js';
import type { BlueFieldCard, MlxToolSet, ToolFlavour, ToolRunner } from '../contracts.js';

export const MFT_TOOLS: Readonly<MlxToolSet> = Object.freeze({
  flavour: 'mft',
  config: 'mlxconfig',
  privhost: 'mlxprivhost',
  flint: 'flint',
});

export const MSTFLINT_TOOLS: Readonly<MlxToolSet> = Object.freeze({
  flavour: 'mstflint',
  config: 'mstconfig',
  privhost: 'mstprivhost',
  flint: 'mstflint',
});

/** MFT's device lister; mstflint has none and addresses devices by PCI address only. */
export const MST_PROGRAM = 'mst';

export const toolsForFlavour = (flavour: ToolFlavour): MlxToolSet =>
  flavour === 'mft' ? { ...MFT_TOOLS } : { ...MSTFLINT_TOOLS };

/**
 * MFT wins when both are installed: its mlxconfig knows newer firmware parameters first and only
 * it creates the /dev/mst names. Program names (not paths) are returned so the same set works
 * through a runner on the DPU, whose PATH differs from the host's.
 */
export const findMlxTools = async (toolPath: string = process.env.PATH ?? ''): Promise<MlxToolSet> => {
  if ((await findOnPath(MFT_TOOLS.config, toolPath)) !== null) return toolsForFlavour('mft');
  if ((await findOnPath(MSTFLINT_TOOLS.config, toolPath)) !== null) return toolsForFlavour('mstflint');
  throw new AgentError(
    'TOOL_NOT_FOUND',
    'neither mlxconfig (NVIDIA MFT) nor mstconfig (Debian package `mstflint`) is on PATH; one of them must be installed in the ramdisk',
    { details: { programs: [MFT_TOOLS.config, MSTFLINT_TOOLS.config], path: toolPath } },
  );
};

/**
 * The `-d` argument for a card: its /dev/mst name when MFT created one, else the PCI address of
 * its first NIC function, where the card-wide NV configuration lives. mstflint cannot open
 * /dev/mst names, so it always gets the address.
 */
export const mlxDevice = (
  card: Pick<BlueFieldCard, 'slot' | 'nicFunctions' | 'mstDevice'>,
  tools: MlxToolSet,
): string => {
  if (tools.flavour === 'mft' && card.mstDevice) return card.mstDevice;
  const first = card.nicFunctions[0];
  if (first === undefined) {
    throw new AgentError(
      'BLUEFIELD_NOT_FOUND',
      `the BlueField in ${card.slot} exposes no NIC function to configure`,
      {
        details: { slot: card.slot },
      },
    );
  }
  return first;
};

export interface ToolRunOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
}

const stringOr = (value: unknown, fallback: string): string => (typeof value === 'string' ? value : fallback);

/**
 * The tools report refusals and errors through their exit code and a `-E-` line, which the
 * callers must read. A runner built on runProcess throws on a non-zero exit instead; its error
 * carries the argv, the exit code and the output tails (the `-E-` line is always at the end), so
 * it is turned back into a result here. Kills, timeouts and cancellations stay errors.
 */
export const runTool = async (
  runner: ToolRunner,
  program: string,
  args: string[],
  options: ToolRunOptions = {},
): Promise<ProcessResult> => {
  try {
    return await runner.run(program, args, options);
  } catch (error) {
    if (!AgentError.is(error) || error.code !== 'TOOL_FAILED') throw error;
    const d = error.details;
    if (typeof d.exitCode !== 'number' || d.timedOut === true || d.cancelled === true || d.signal != null) {
      throw error;
    }
    const argv =
      Array.isArray(d.argv) && d.argv.every((a) => typeof a === 'string') ? d.argv : [program, ...args];
    return {
      argv,
      exitCode: d.exitCode,
      signal: null,
      timedOut: false,
      cancelled: false,
      durationMs: typeof d.durationMs === 'number' ? d.durationMs : 0,
      stdout: stringOr(d.stdoutTail, ''),
      stderr: stringOr(d.stderrTail, ''),
    };
  }
};

/** Both streams, in the order a terminal would mostly show them: the tools print errors on stdout. */
export const outputOf = (result: ProcessResult): string =>
  result.stderr === '' ? result.stdout : `${result.stdout}\n${result.stderr}`;

/** `-E-` lines, without the marker. */
export const errorLines = (text: string): string[] =>
  text
    .split('\n')
    .map((line) => /-E-\s*(.*)$/.exec(line.trim())?.[1]?.trim())
    .filter((line): line is string => line !== undefined && line !== '');

/** A TOOL_FAILED in the shape runProcess gives, with the tool's own `-E-` lines added. */
export const toolFailed = (
  result: ProcessResult,
  what: string,
  extra: Record<string, unknown> = {},
): AgentError => {
  const errors = errorLines(outputOf(result));
  const reason = errors.at(-1) ?? `exit code ${result.exitCode ?? 'unknown'}`;
  return new AgentError('TOOL_FAILED', `${what}: ${reason}`, {
    details: { ...processFailureDetails(result), errors, ...extra },
  });
};

export interface LocalRunnerOptions {
  /** Replaces PATH for the lookup and the programs, as the inventory's tools do. */
  toolPath?: string;
  /** Added to the environment of every program. */
  env?: Record<string, string>;
  run?: RunProcess;
}

/** A runner for the agent's own machine. */
export const createLocalRunner = (options: LocalRunnerOptions = {}): ToolRunner => {
  const run = options.run ?? runProcess;
  const env = {
    ...(options.env ?? {}),
    ...(options.toolPath === undefined ? {} : { PATH: options.toolPath }),
  };
  const hasEnv = Object.keys(env).length > 0;
  return {
    where: 'host',
    run: (program, args, runOptions = {}) =>
      run(program, args, {
        ...(runOptions.signal ? { signal: runOptions.signal } : {}),
        ...(runOptions.timeoutMs ? { timeoutMs: runOptions.timeoutMs } : {}),
        ...(hasEnv ? { env } : {}),
      }),
  };
};
