import { Type } from '@sinclair/typebox';
import type { HardwarePaths } from '../hardware/paths.js';
import { collectLldp } from '../lldp/capture.js';
import { defineCommand, type AnyCommandDefinition } from './definition.js';

export interface LldpCommandDeps {
  paths: HardwarePaths;
  /** `ipa-lldp-timeout`: used when the params name no timeout. */
  defaultTimeoutS: number;
}

const MIN_TIMEOUT_S = 0.1;

const LldpParams = Type.Object(
  {
    interfaces: Type.Optional(
      Type.Array(Type.String({ minLength: 1, maxLength: 15 }), { minItems: 1, maxItems: 1024 }),
    ),
    timeout_s: Type.Optional(Type.Number({ minimum: MIN_TIMEOUT_S, maximum: 600 })),
  },
  { additionalProperties: false },
);

export const lldpCommands = (deps: LldpCommandDeps): AnyCommandDefinition[] => [
  defineCommand({
    name: 'lldp.collect',
    summary: 'Capture the first LLDP frame on each interface (all at once) and decode it',
    // It brings down links up for the capture and restores them, which changes nothing lasting.
    exclusive: false,
    params: LldpParams,
    handler: async (params, context) => {
      // The setting allows 0 (IPA's "do not wait"); a capture needs some time to see anything.
      const timeoutS = params.timeout_s ?? Math.max(MIN_TIMEOUT_S, deps.defaultTimeoutS);
      const interfaces = await collectLldp({
        paths: deps.paths,
        interfaces: params.interfaces,
        timeoutMs: timeoutS * 1000,
        signal: context.signal,
        logger: context.log,
        onDone: (result, done, total) =>
          context.progress({
            phase: 'lldp',
            done,
            total,
            unit: 'steps',
            message: `${result.interface} ${result.status}`,
          }),
      });
      return { interfaces };
    },
  }),
];
