/**
 * The parts of Ironic's node dict the agent uses. Ironic sends the whole node (about 60 keys) with
 * every step; only what is read here is checked, the rest is not the agent's business.
 */
import { Type } from '@sinclair/typebox';
import { RootDeviceHintsSchema } from '../commands/disk.js';
import type { RootDeviceHints } from '../image/contracts.js';
import { validate } from '../protocol/validate.js';
import { AgentError } from '../util/errors.js';

/** A JSON object: what Ironic sends for `node`, `properties`, `instance_info` and step args. */
export type JsonObject = Record<string, unknown>;

export const isJsonObject = (value: unknown): value is JsonObject =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

const Section = Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()]);

const NodeView = Type.Object({
  uuid: Type.Optional(Type.String({ maxLength: 256 })),
  properties: Type.Optional(Section),
  instance_info: Type.Optional(Section),
});

export interface RootDeviceChoice {
  hints: RootDeviceHints;
  /** Where they came from, for messages: `node.instance_info.root_device` or `node.properties.root_device`. */
  source: string;
}

/**
 * The node a command acts for: the one Ironic sent with it, else the one from lookup. Ironic
 * sends the node with every step; the lookup copy covers a caller that does not.
 */
export const chooseNode = (sent: unknown, fromLookup: JsonObject | null): JsonObject | null => {
  if (sent === undefined || sent === null) return fromLookup;
  const checked = validate(NodeView, sent, 'params.node');
  if (!checked.ok)
    throw new AgentError(
      'INVALID_PARAMS',
      `${checked.violation.field}: ${checked.violation.expected}; Ironic sends the node as a JSON object`,
      { details: { ...checked.violation } },
    );
  return sent as JsonObject;
};

/**
 * The root device hints, with IPA's precedence: `instance_info.root_device` (per deployment)
 * over `properties.root_device` (per node). Empty hints are no hints: the default disk is chosen.
 */
export const rootDeviceHintsOf = (node: JsonObject | null): RootDeviceChoice | null => {
  if (!node) return null;
  for (const section of ['instance_info', 'properties'] as const) {
    const holder = node[section];
    if (!isJsonObject(holder)) continue;
    const hints = holder.root_device;
    if (hints === undefined || hints === null) continue;
    const source = `node.${section}.root_device`;
    const checked = validate(RootDeviceHintsSchema, hints, source);
    if (!checked.ok)
      throw new AgentError(
        'INVALID_PARAMS',
        `${checked.violation.field}: ${checked.violation.expected}; root device hints are an object of strings, numbers and booleans`,
        { details: { ...checked.violation } },
      );
    if (Object.keys(checked.value).length === 0) continue;
    return { hints: checked.value as RootDeviceHints, source };
  }
  return null;
};
