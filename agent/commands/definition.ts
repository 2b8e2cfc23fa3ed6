import type { Static, TSchema } from '@sinclair/typebox';
import type { Logger } from '../util/logger.js';

export type ProgressUnit = 'bytes' | 'steps';

export interface ProgressUpdate {
  phase: string;
  done: number;
  total?: number | null;
  unit?: ProgressUnit;
  rate?: number | null;
  message?: string | null;
}

export interface CommandContext {
  commandId: string;
  /** Aborted when the command is cancelled; handlers stop at their next safe point. */
  signal: AbortSignal;
  progress: (update: ProgressUpdate) => void;
  log: Logger;
  /**
   * Runs `action` once the result has reached whoever asked (the conductor acknowledged it, or
   * at once for a local caller). Power actions use this so the record is never lost to a reboot.
   */
  afterDelivery: (action: () => Promise<void> | void) => void;
}

export type CommandResult = Record<string, unknown>;

export interface CommandDefinition<S extends TSchema = TSchema> {
  name: string;
  summary: string;
  /** Exclusive commands change a disk, the DPU or the power state: one at a time. */
  exclusive: boolean;
  params: S;
  handler: (params: Static<S>, context: CommandContext) => Promise<CommandResult>;
}

// The registry stores definitions of mixed schemas; the engine validates params before the call.
export type AnyCommandDefinition = CommandDefinition<TSchema>;

export const defineCommand = <S extends TSchema>(definition: CommandDefinition<S>): AnyCommandDefinition =>
  definition as unknown as AnyCommandDefinition;
