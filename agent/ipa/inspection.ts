/**
 * In-band inspection as IPA does it at start-up when ipa-inspection-callback-url is set (ipa.md
 * §4.3): the payload its collectors build, posted to the inspector's `/v1/continue`. A failure is
 * logged and reported, never thrown: the agent goes on to lookup either way.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { chooseDefaultDisk } from '../hardware/generic/disks/select.js';
import type { DiskInventory, Inventory } from '../hardware/generic/inventory/types.js';
import { AgentError, CancelledError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { sendJson, type TlsTrust } from './http-json.js';
import { parseIronicFault } from './ironic-client.js';

export const DEFAULT_INSPECTION_ATTEMPTS = 5;
export const DEFAULT_INSPECTION_RETRY_DELAY_MS = 5_000;
const DEFAULT_INSPECTION_TIMEOUT_MS = 60_000;

/** What IPA reports for its generic hardware manager; Ironic compares it with cached steps. */
export const GENERIC_MANAGER = { name: 'generic_hardware_manager', version: '1.1' } as const;

/** One PCI function as IPA's `pci-devices` collector sends it (hex without 0x). */
export interface InspectionPciDevice {
  vendor_id: string;
  product_id: string;
  class: string | null;
  revision: string | null;
  bus: string;
}

export interface InspectionPayload {
  inventory: Inventory;
  /** The disk IPA's default choice would pick (smallest of at least 4 GiB); absent when none. */
  root_disk?: DiskInventory;
  /** BOOTIF as given (deprecated in IPA, still read by inspector hooks). */
  boot_interface: string | null;
  configuration: { collectors: string[]; managers: Array<{ name: string; version: string }> };
  pci_devices?: InspectionPciDevice[];
  /** null, or IPA's "The following errors were encountered:" list. */
  error: string | null;
  /** The `logs` collector's base64 tar.gz. */
  logs?: string;
}

export interface InspectionPayloadInput {
  inventory: Inventory;
  /** BOOTIF from the kernel command line. */
  bootInterface: string | null;
  /** ipa-inspection-collectors, in order. */
  collectors: readonly string[];
  managers?: ReadonlyArray<{ name: string; version: string }>;
  /** Collector failures, one line each. */
  errors?: readonly string[];
  logs?: string | null;
}

export const formatInspectionErrors = (errors: readonly string[]): string | null =>
  errors.length === 0
    ? null
    : `The following errors were encountered:\n${errors.map((error) => `* ${error}`).join('\n')}`;

const pciDevices = (inventory: Inventory): InspectionPciDevice[] =>
  inventory.pci_devices.flatMap((device) =>
    device.vendor && device.device
      ? [
          {
            vendor_id: device.vendor,
            product_id: device.device,
            class: device.class,
            revision: device.revision,
            bus: device.address,
          },
        ]
      : [],
  );

export const buildInspectionPayload = (input: InspectionPayloadInput): InspectionPayload => {
  const rootDisk = chooseDefaultDisk(input.inventory.disks);
  const pci = pciDevices(input.inventory);
  return {
    inventory: input.inventory,
    ...(rootDisk ? { root_disk: rootDisk } : {}),
    boot_interface: input.bootInterface,
    configuration: {
      collectors: [...input.collectors],
      managers: (input.managers ?? [GENERIC_MANAGER]).map((manager) => ({ ...manager })),
    },
    ...(pci.length > 0 ? { pci_devices: pci } : {}),
    error: formatInspectionErrors(input.errors ?? []),
    ...(input.logs ? { logs: input.logs } : {}),
  };
};

export interface PostInspectionOptions {
  /** ipa-inspection-callback-url, e.g. http://inspector:5050/v1/continue. */
  url: string;
  payload: InspectionPayload;
  tls?: TlsTrust;
  /** Per attempt. */
  timeoutMs?: number;
  /** Attempts in all when the inspector cannot be reached (5). */
  attempts?: number;
  retryDelayMs?: number;
  signal?: AbortSignal;
  logger: Logger;
}

export type InspectionOutcome =
  | {
      ok: true;
      status: number;
      /** The node's UUID from the answer: lookup's node_uuid. */ uuid: string | null;
    }
  | { ok: false; status: number | null; error: AgentError };

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The inspector answers `{"error": {"message": ...}}`; Ironic's own format is read too. */
const inspectorMessage = (body: string): string => {
  try {
    const parsed = JSON.parse(body) as { error?: { message?: unknown } };
    if (typeof parsed.error?.message === 'string') return parsed.error.message;
  } catch {
    // Not JSON: Ironic's parser falls back to the raw text.
  }
  return parseIronicFault(body).text || '(empty body)';
};

const readUuid = (body: string): string | null => {
  try {
    const uuid = (JSON.parse(body) as { uuid?: unknown } | null)?.uuid;
    return typeof uuid === 'string' && UUID.test(uuid) ? uuid : null;
  } catch {
    return null;
  }
};

/**
 * Posts the payload. Only a connection that could not be made or was reset is retried (attempts
 * in all, retryDelayMs apart), as IPA: a timeout may mean the inspector is processing it, and
 * posting it twice would make the second fail. A status of 400 or more is a failure at once.
 */
export const postInspection = async (options: PostInspectionOptions): Promise<InspectionOutcome> => {
  const { logger, signal } = options;
  const attempts = Math.max(1, options.attempts ?? DEFAULT_INSPECTION_ATTEMPTS);
  const delayMs = options.retryDelayMs ?? DEFAULT_INSPECTION_RETRY_DELAY_MS;
  let url: URL;
  try {
    url = new URL(options.url);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError('not http(s)');
  } catch (error) {
    const failure = new AgentError(
      'INVALID_CONFIG',
      `ipa-inspection-callback-url ${options.url} is not an http(s) URL`,
      {
        details: { setting: 'ipa-inspection-callback-url' },
        cause: error,
      },
    );
    logger.error({ err: failure }, 'inspection data not sent');
    return { ok: false, status: null, error: failure };
  }

  let lastError: AgentError | null = null;
  for (let attempt = 1; attempt <= attempts; attempt += 1) {
    try {
      const response = await sendJson({
        method: 'POST',
        url,
        headers: { Accept: 'application/json', 'Content-Type': 'application/json' },
        body: options.payload,
        timeoutMs: options.timeoutMs ?? DEFAULT_INSPECTION_TIMEOUT_MS,
        tls: options.tls ?? { ca: null, insecure: false },
        ...(signal ? { signal } : {}),
      });
      if (response.status >= 400) {
        const error = new AgentError(
          'IRONIC_API_ERROR',
          `the inspector answered ${response.status}: ${inspectorMessage(response.text)}`,
          { details: { status: response.status, url: `${url.origin}${url.pathname}` } },
        );
        logger.error({ err: error }, 'the inspector refused the inspection data; going on to lookup');
        return { ok: false, status: response.status, error };
      }
      const uuid = readUuid(response.text);
      logger.info({ status: response.status, nodeUuid: uuid }, 'inspection data accepted');
      return { ok: true, status: response.status, uuid };
    } catch (error) {
      if (AgentError.is(error) && error.code === 'CANCELLED') throw error;
      const failure = AgentError.is(error)
        ? error
        : new AgentError('INTERNAL', error instanceof Error ? error.message : String(error), {
            cause: error,
          });
      lastError = failure;
      const retryable = failure.code === 'IRONIC_UNREACHABLE' && failure.details.reason === 'connection';
      if (!retryable || attempt === attempts) break;
      logger.warn({ err: failure, attempt, retryInMs: delayMs }, 'the inspector cannot be reached; retrying');
      try {
        await sleep(delayMs, undefined, signal ? { signal } : {});
      } catch {
        throw new CancelledError('inspection cancelled');
      }
    }
  }
  const error = lastError ?? new AgentError('INTERNAL', 'inspection ended without an outcome');
  logger.error({ err: error }, 'inspection data could not be sent; going on to lookup');
  return { ok: false, status: null, error };
};
