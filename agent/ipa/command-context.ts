/**
 * What an IPA command gets to do its work. Every action goes through `runRegistry`, so the
 * command registry stays the one implementation: the IPA layer only translates names and shapes.
 */
import type { Logger } from '../util/logger.js';
import type { IpaSession } from './contracts.js';

/** What this boot wrote, for the commands Ironic sends after write_image. */
export interface DeployState {
  /** The device the last successful write_image wrote, as image.write named it. */
  writtenDevice: string | null;
  /** The image id Ironic gave for it. */
  imageId: string | null;
}

export interface IpaCommandContext {
  /** The IPA command's id (a uuid); registry commands it runs are named after it. */
  commandId: string;
  log: Logger;
  session: IpaSession;
  /**
   * Runs a registry command through the engine to its end and returns its result; a failure or
   * refusal is thrown as an AgentError with the registry command's code.
   */
  runRegistry: (name: string, params: Record<string, unknown>) => Promise<Record<string, unknown>>;
  /** Whether a BlueField is present: its steps are offered only then. */
  bluefieldPresent: () => Promise<boolean>;
  deploy: DeployState;
}
