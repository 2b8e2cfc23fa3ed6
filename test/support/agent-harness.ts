/**
 * Starts an in-process agent channel against a conductor URL with a registry of test commands
 * whose timing the test controls. Integration tests that need the real process use spawnAgent.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { Type } from '@sinclair/typebox';
import { AgentChannel, type ChannelOptions } from '../../agent/channel/agent-channel.js';
import { defineCommand } from '../../agent/commands/definition.js';
import { CommandEngine } from '../../agent/commands/engine.js';
import { CommandRegistry } from '../../agent/commands/registry.js';
import { AgentError } from '../../agent/util/errors.js';
import { createLogger, LogForwarder, silentLogger, type Logger } from '../../agent/util/logger.js';

export interface Gates {
  /** Lets the command with this id finish. */
  open(commandId: string): void;
  /** Resolves when the command with this id has started and waits at its gate. */
  started(commandId: string): Promise<void>;
}

export const createGates = (): Gates & { wait(commandId: string, signal: AbortSignal): Promise<void> } => {
  const opened = new Set<string>();
  const waiters = new Map<string, () => void>();
  const startedWaiters = new Map<string, Array<() => void>>();
  const startedIds = new Set<string>();
  return {
    open(commandId) {
      opened.add(commandId);
      waiters.get(commandId)?.();
    },
    started(commandId) {
      if (startedIds.has(commandId)) return Promise.resolve();
      return new Promise((resolve) =>
        startedWaiters.set(commandId, [...(startedWaiters.get(commandId) ?? []), resolve]),
      );
    },
    wait(commandId, signal) {
      startedIds.add(commandId);
      for (const resolve of startedWaiters.get(commandId) ?? []) resolve();
      if (opened.has(commandId)) return Promise.resolve();
      return new Promise((resolve, reject) => {
        waiters.set(commandId, resolve);
        signal.addEventListener('abort', () => reject(signal.reason as Error), { once: true });
      });
    },
  };
};

export const testRegistry = (gates: ReturnType<typeof createGates>): CommandRegistry =>
  new CommandRegistry().register(
    defineCommand({
      name: 'test.gated',
      summary: 'exclusive; waits until the test opens its gate, cancellable',
      exclusive: true,
      params: Type.Object({ fail: Type.Optional(Type.Boolean()) }, { additionalProperties: false }),
      handler: async (params, context) => {
        context.progress({ phase: 'waiting', done: 0, total: 1 });
        await gates.wait(context.commandId, context.signal);
        if (params.fail) throw new AgentError('TOOL_FAILED', 'asked to fail');
        return { gated: true };
      },
    }),
    defineCommand({
      name: 'test.echo',
      summary: 'read-only; returns its params',
      exclusive: false,
      params: Type.Object({ value: Type.Optional(Type.String()) }, { additionalProperties: false }),
      handler: async (params) => ({ echo: params.value ?? null }),
    }),
    defineCommand({
      name: 'test.big',
      summary: 'read-only; returns a result of the given size, to test the frame limit on the way out',
      exclusive: false,
      params: Type.Object(
        { mib: Type.Integer({ minimum: 1, maximum: 64 }) },
        { additionalProperties: false },
      ),
      handler: async (params) => ({ blob: 'b'.repeat(params.mib * 1024 * 1024) }),
    }),
    defineCommand({
      name: 'test.steps',
      summary: 'read-only; reports progress for a while',
      exclusive: false,
      params: Type.Object({
        steps: Type.Integer({ minimum: 1, maximum: 1000 }),
        delay_ms: Type.Integer({ minimum: 0 }),
      }),
      handler: async (params, context) => {
        for (let step = 1; step <= params.steps; step += 1) {
          await sleep(params.delay_ms, undefined, { signal: context.signal });
          context.progress({ phase: 'stepping', done: step, total: params.steps });
        }
        return { steps: params.steps };
      },
    }),
  );

export interface InProcessAgent {
  channel: AgentChannel;
  engine: CommandEngine;
  gates: ReturnType<typeof createGates>;
  stop(): Promise<void>;
}

export const startInProcessAgent = (
  url: string,
  overrides: Partial<ChannelOptions> & { logger?: Logger; verbose?: boolean } = {},
): InProcessAgent => {
  const gates = createGates();
  const forwarder = new LogForwarder();
  const logger =
    overrides.logger ?? (overrides.verbose ? createLogger({ level: 'debug', forwarder }) : silentLogger());
  const engine = new CommandEngine(testRegistry(gates), {
    logger,
    deliveryAcknowledged: true,
    progressIntervalMs: 100,
  });
  const channel = new AgentChannel({
    url,
    insecure: true,
    caPath: null,
    pin: null,
    engine,
    identity: async () => ({ bootId: 'boot-1', hostname: 'node-1', macs: ['52:54:00:12:34:56'] }),
    logger,
    logForwarder: forwarder,
    agentVersion: 'test',
    bootif: '52:54:00:12:34:56',
    nodeUuid: null,
    pingIntervalMs: 1000,
    pongTimeoutMs: 2000,
    backoffMinMs: 50,
    backoffMaxMs: 200,
    ...overrides,
  });
  channel.start();
  return { channel, engine, gates, stop: () => channel.stop() };
};
