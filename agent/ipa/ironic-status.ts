/**
 * Where the agent stands with Ironic, for the console status screen and `bm-agent` status: lookup
 * and heartbeats write to one tracker, the screen reads snapshots or listens for changes.
 */
import { AgentError } from '../util/errors.js';

/**
 * - looking-up: lookups are being sent (and retried) until Ironic knows the node;
 * - heartbeating: the last heartbeat was accepted (or the first one is on its way);
 * - retrying: the last heartbeat failed; the next one is on the error tick;
 * - stopped: heartbeats stopped (on request, or because Ironic rejected the token).
 */
export type IronicState = 'idle' | 'looking-up' | 'heartbeating' | 'retrying' | 'stopped';

export interface IronicStatus {
  state: IronicState;
  nodeUuid: string | null;
  /** Failed attempts since the last success: lookups while looking up, heartbeats after that. */
  attempts: number;
  /** `CODE: message` of the last failure; kept after a success, like the channel's. */
  lastError: string | null;
  lastErrorCode: string | null;
  /** When Ironic last accepted a heartbeat (RFC 3339). */
  lastHeartbeatAt: string | null;
  /** When the next lookup or heartbeat is due, while waiting. */
  nextAttemptAt: string | null;
  /** The microversion in use, once known. */
  apiVersion: string | null;
}

export type IronicStatusListener = (status: IronicStatus) => void;

const initial = (): IronicStatus => ({
  state: 'idle',
  nodeUuid: null,
  attempts: 0,
  lastError: null,
  lastErrorCode: null,
  lastHeartbeatAt: null,
  nextAttemptAt: null,
  apiVersion: null,
});

export const describeFailure = (error: unknown): { code: string; text: string } => {
  if (AgentError.is(error)) return { code: error.code, text: `${error.code}: ${error.message}` };
  const message = error instanceof Error ? error.message : String(error);
  return { code: 'INTERNAL', text: `INTERNAL: ${message}` };
};

export class IronicStatusTracker {
  private current: IronicStatus = initial();
  private readonly listeners = new Set<IronicStatusListener>();

  snapshot(): IronicStatus {
    return { ...this.current };
  }

  /** Called synchronously on every change; a throwing listener is ignored. */
  onChange(listener: IronicStatusListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  update(patch: Partial<IronicStatus>): void {
    this.current = { ...this.current, ...patch };
    const status = this.snapshot();
    for (const listener of this.listeners) {
      try {
        listener(status);
      } catch {
        // A status screen must never break lookup or heartbeats.
      }
    }
  }

  failed(error: unknown, patch: Partial<IronicStatus> = {}): void {
    const { code, text } = describeFailure(error);
    this.update({ ...patch, attempts: this.current.attempts + 1, lastError: text, lastErrorCode: code });
  }
}
