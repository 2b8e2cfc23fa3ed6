/**
 * IPA's extension layer over the command engine: looks a dotted IPA name up in the command table,
 * runs one IPA command at a time, and keeps each one's IPA-shaped record for the life of the
 * process (the engine keeps the records of the registry commands they ran).
 */
import { randomUUID } from 'node:crypto';
import type { CommandEngine, RunRejection } from '../commands/engine.js';
import { AgentError, serializeError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import type { DeployState, IpaCommandContext } from './command-context.js';
import type { IpaCommandResult, IpaSession } from './contracts.js';
import { ipaCommands, type IpaCommandEntry } from './ipa-commands.js';
import type { JsonObject } from './node.js';
import { failureStatus, ipaResult, reviveError, toIpaError, type IpaCommandState } from './results.js';

export interface IpaExtensionsOptions {
  engine: CommandEngine;
  session: IpaSession;
  /** Whether a BlueField is in this host: its steps are offered only then. */
  bluefieldPresent: () => Promise<boolean>;
  logger: Logger;
  /** The command table; the default is every IPA command this agent serves. */
  commands?: IpaCommandEntry[];
}

/** What POST /v1/commands/ does with a request: started, or refused with IPA's HTTP status. */
export type IpaDispatch =
  | { ok: true; id: string; sync: boolean; settleMs: number }
  | { ok: false; status: 400 | 404 | 409; faultstring: string };

export interface IpaFinishedEvent {
  result: IpaCommandResult;
  /** Sync commands were answered with their result; only async ones call for a heartbeat. */
  sync: boolean;
}

interface IpaRecord {
  id: string;
  /** Start order: the list Ironic reads begins at the current session's first command. */
  seq: number;
  name: string;
  sync: boolean;
  state: IpaCommandState;
  done: Promise<void>;
}

const RUNNING: IpaCommandState = { status: 'RUNNING', result: null, error: null };

const describeRejection = (name: string, rejection: RunRejection): AgentError => {
  switch (rejection.kind) {
    case 'busy':
      return new AgentError('AGENT_BUSY', `${name} cannot start: command ${rejection.running} is running`, {
        details: { running: rejection.running },
      });
    case 'invalid_params':
      return new AgentError(
        'INVALID_PARAMS',
        `${name} refused its params: ${rejection.violation.field}: ${rejection.violation.expected}`,
        { details: { ...rejection.violation, command: name } },
      );
    case 'unknown_command':
      return new AgentError('INTERNAL', `this agent has no registry command ${name}`, {
        details: { command: name },
      });
  }
};

export class IpaExtensions {
  private readonly records = new Map<string, IpaRecord>();
  private readonly listeners = new Set<(event: IpaFinishedEvent) => void>();
  private readonly table = new Map<string, Map<string, IpaCommandEntry>>();
  private readonly deploy: DeployState = { writtenDevice: null, imageId: null };
  private seq = 0;
  private sessionStartSeq = 0;

  constructor(private readonly options: IpaExtensionsOptions) {
    for (const entry of options.commands ?? ipaCommands()) {
      const commands = this.table.get(entry.extension) ?? new Map<string, IpaCommandEntry>();
      commands.set(entry.command, entry);
      this.table.set(entry.extension, commands);
    }
  }

  /** Called with each IPA command that leaves RUNNING. */
  onFinished(listener: (event: IpaFinishedEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The IPA command still running, if any: IPA runs one at a time. */
  running(): IpaCommandResult | undefined {
    for (const record of this.records.values())
      if (record.state.status === 'RUNNING') return this.toResult(record);
    return undefined;
  }

  /**
   * Starts `<extension>.<command>` with `params` (an object, as the server checked), unless the
   * name is unknown (400 or 404, as IPA answers) or a command is running (409).
   */
  execute(name: string, params: JsonObject): IpaDispatch {
    const dot = name.indexOf('.');
    if (dot <= 0 || dot === name.length - 1)
      return {
        ok: false,
        status: 400,
        faultstring: 'Invalid command: Command name must be <extension>.<command>',
      };
    const extension = name.slice(0, dot);
    const command = name.slice(dot + 1);
    const commands = this.table.get(extension);
    if (!commands)
      return {
        ok: false,
        status: 404,
        faultstring: `Requested object not found: Extension ${extension} not found`,
      };
    const entry = commands.get(command);
    if (!entry)
      return { ok: false, status: 400, faultstring: `Invalid command: Unknown command: ${command}` };
    const running = this.running();
    if (running)
      return {
        ok: false,
        status: 409,
        faultstring: `Agent is busy: ${running.command_name} is still running`,
      };
    if (entry.exclusive && this.options.engine.busy())
      return {
        ok: false,
        status: 409,
        faultstring: 'Agent is busy: another command that changes a disk, the DPU or the power is running',
      };

    const id = randomUUID();
    const record: IpaRecord = {
      id,
      seq: ++this.seq,
      name: command,
      sync: entry.sync,
      state: RUNNING,
      done: Promise.resolve(),
    };
    this.records.set(id, record);
    record.done = this.run(record, entry, params);
    return { ok: true, id, sync: entry.sync, settleMs: entry.settleMs ?? 0 };
  }

  private async run(record: IpaRecord, entry: IpaCommandEntry, params: JsonObject): Promise<void> {
    const log = this.options.logger.child({
      ipa_command_id: record.id,
      ipa_command: `${entry.extension}.${entry.command}`,
    });
    const engineIds: string[] = [];
    const context: IpaCommandContext = {
      commandId: record.id,
      log,
      session: this.options.session,
      bluefieldPresent: this.options.bluefieldPresent,
      deploy: this.deploy,
      runRegistry: (name, registryParams) => {
        // The first registry command shares the IPA command's id, so the two records line up.
        const engineId = engineIds.length === 0 ? record.id : `${record.id}.${engineIds.length + 1}`;
        engineIds.push(engineId);
        return this.runRegistry(engineId, name, registryParams);
      },
    };
    try {
      // Deferred, so a synchronous throw in the command lands in its record, never in the caller.
      await Promise.resolve();
      const result = await entry.run(params, context);
      record.state = { status: 'SUCCEEDED', result, error: null };
      log.info('command succeeded');
    } catch (error) {
      const serialized = serializeError(error);
      record.state = {
        status: failureStatus(serialized),
        result: null,
        error: toIpaError(serialized, entry.failureType),
      };
      if (!AgentError.is(error)) log.error({ err: error }, 'command failed with an unexpected error');
      else log.warn({ error: serialized, status: record.state.status }, 'command failed');
    }
    const finished = { result: this.toResult(record), sync: record.sync };
    for (const listener of this.listeners) {
      try {
        listener(finished);
      } catch (error) {
        log.error({ err: error }, 'IPA command listener failed');
      }
    }
    // Ironic's answer to the POST is the only delivery IPA has: actions waiting on delivery (the
    // power off) go now, after the record says how the command ended.
    for (const engineId of engineIds) this.options.engine.acknowledge(engineId);
  }

  private async runRegistry(engineId: string, name: string, params: JsonObject): Promise<JsonObject> {
    const outcome = this.options.engine.run(engineId, name, params);
    if (!outcome.ok) throw describeRejection(name, outcome.rejection);
    const record = await this.options.engine.wait(engineId);
    if (!record)
      throw new AgentError('INTERNAL', `the engine lost the record of ${name}`, { details: { engineId } });
    if (record.status === 'SUCCEEDED') return record.result ?? {};
    throw reviveError(
      record.error ?? {
        code: 'INTERNAL',
        message: `${name} ended ${record.status} without an error`,
        details: {},
      },
    );
  }

  private toResult(record: IpaRecord): IpaCommandResult {
    return ipaResult(record.id, record.name, record.state);
  }

  /**
   * Ironic dropped the token and a new lookup brought another: for Ironic the node rebooted, and
   * it treats an agent whose command list holds more than `get_*_steps` as one that is busy with
   * something else. An agent still up (fake or failed power actions) starts the list afresh, as a
   * rebooted one would; a command still running stays listed, and every record stays readable by id.
   */
  startSession(): void {
    this.sessionStartSeq = this.seq;
  }

  /** The IPA commands of this session, in the order they started (what GET /v1/commands/ lists). */
  list(): IpaCommandResult[] {
    return [...this.records.values()]
      .filter((record) => record.seq > this.sessionStartSeq || record.state.status === 'RUNNING')
      .map((record) => this.toResult(record));
  }

  get(id: string): IpaCommandResult | undefined {
    const record = this.records.get(id);
    return record ? this.toResult(record) : undefined;
  }

  /** The command's result once it has left RUNNING; undefined for an unknown id. */
  async wait(id: string): Promise<IpaCommandResult | undefined> {
    const record = this.records.get(id);
    if (!record) return undefined;
    await record.done;
    return this.toResult(record);
  }
}
