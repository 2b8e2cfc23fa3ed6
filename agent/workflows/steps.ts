import type { ProgressUpdate } from '../commands/definition.js';
import type { OpContext, OpResult } from '../hardware/bluefield/ops.js';

/** The per-card results of a BlueField operation. */
export const devicesOf = (result: OpResult | undefined): OpResult[] =>
  result && Array.isArray(result.devices) ? (result.devices as OpResult[]) : [];

/** The progress of one step of a workflow, its phase prefixed with the step's name. */
export const withPhase =
  (context: OpContext, phase: string): OpContext['progress'] =>
  (update: ProgressUpdate) =>
    context.progress({ ...update, phase: `${phase}: ${update.phase}` });
