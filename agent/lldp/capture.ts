/**
 * LLDP collection on every interface at once. Unlike IPA, which waits on all sockets until a
 * timeout passes without a frame, each interface here is done at its first frame, a port without
 * carrier is given up (at once when it was already up, after a short wait when the collection
 * had to bring it up), and the call returns as soon as every interface is done or the timeout
 * passes, whichever comes first.
 */
import { performance } from 'node:perf_hooks';
import type { HardwarePaths } from '../hardware/paths.js';
import { AgentError, CancelledError, errorMessage } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { findOnPath, runProcess as defaultRunProcess, type RunProcess } from '../util/run-process.js';
import {
  DEFAULT_CARRIER_WAIT_MS,
  listPhysicalInterfaces,
  readLinkState,
  setLinkAdminState,
  validateInterfaces,
  waitForCarrier,
} from './links.js';
import { parseLldp } from './parse.js';
import type { PcapRecord } from './pcap.js';
import { LINKTYPE_ETHERNET } from './pcap.js';
import { startTcpdump, type TcpdumpCapture } from './tcpdump.js';
import { decodeTlvs, stripEthernetHeader } from './tlv.js';
import type { InterfaceLldp, LldpStatus } from './types.js';

export const DEFAULT_KILL_GRACE_MS = 500;

export interface CollectLldpOptions {
  paths: HardwarePaths;
  /** Taken as given (validated); the physical NICs when absent. */
  interfaces?: string[];
  timeoutMs: number;
  /**
   * How long a port the collection brought up may take to show carrier before it counts as
   * unplugged. A port that was already up and has no carrier is reported at once.
   */
  carrierWaitMs?: number;
  signal?: AbortSignal;
  logger: Logger;
  /** Called at an interface's first frame, with its decoded result. */
  onFrame?: (result: InterfaceLldp) => void;
  /** Called once per interface when it is done, whatever its status. */
  onDone?: (result: InterfaceLldp, done: number, total: number) => void;
  /** Runs `ip`; tests substitute it. */
  runProcess?: RunProcess;
  /** Where tcpdump is looked up (PATH syntax); the agent's PATH by default. */
  envPATH?: string;
  killGraceMs?: number;
}

/**
 * Links a collection in this process brought up, shared by every collection using them, so that
 * two overlapping collections (lldp.collect next to an inventory with LLDP) do not take a link
 * down under each other: the last one to finish restores it.
 */
interface BorrowedLink {
  users: number;
  /** The `ip link set up`; awaited before restoring so the two cannot cross. */
  up: Promise<unknown>;
}
const borrowedLinks = new Map<string, BorrowedLink>();

interface Listener {
  name: string;
  result: InterfaceLldp | null;
  carrierSeen: boolean;
  /** Set while this collection uses a link that was down before a collection brought it up. */
  lease: BorrowedLink | null;
  capture: TcpdumpCapture | null;
  /** Ends this interface's carrier wait and link-up when it is done or the collection ends. */
  stop: AbortController;
  restoreWarning: string | null;
}

const emptyResult = (
  name: string,
  status: LldpStatus,
  extra: Partial<InterfaceLldp> = {},
): InterfaceLldp => ({
  interface: name,
  status,
  tlvs: [],
  parsed: {},
  warnings: [],
  received_after_ms: null,
  ...extra,
});

/** stripEthernetHeader → decodeTlvs → parseLldp; whatever the frame holds, never a throw. */
export const decodeFrame = (
  name: string,
  record: PcapRecord,
  linktype: number,
  receivedAfterMs: number,
): InterfaceLldp => {
  const result = emptyResult(name, 'received', { received_after_ms: receivedAfterMs });
  if (record.originalLength > record.data.length) {
    result.warnings.push(
      `frame of ${record.originalLength} bytes was cut to ${record.data.length} by the capture`,
    );
  }
  if (linktype !== LINKTYPE_ETHERNET) {
    result.warnings.push(`capture link type ${linktype} is not Ethernet; the frame was not decoded`);
    return result;
  }
  try {
    const payload = stripEthernetHeader(record.data);
    if (payload === null) {
      result.warnings.push(`frame of ${record.data.length} bytes is not an LLDP frame; it was not decoded`);
      return result;
    }
    const decoded = decodeTlvs(payload);
    result.tlvs = decoded.tlvs;
    result.warnings.push(...decoded.warnings);
    const parsed = parseLldp(decoded.tlvs);
    result.parsed = parsed.parsed;
    result.warnings.push(...parsed.warnings);
  } catch (error) {
    // The decoders promise not to throw; if one does, the raw TLVs read so far still go out.
    result.warnings.push(`decoding failed: ${errorMessage(error)}`);
  }
  return result;
};

const cancellation = (signal: AbortSignal): AgentError => {
  const reason: unknown = signal.reason;
  return AgentError.is(reason) && reason.code === 'CANCELLED' ? reason : new CancelledError();
};

/** Stops the interface's tcpdump and puts its link back the way it was; never throws. */
const release = async (
  listener: Listener,
  options: { runProcess: RunProcess; killGraceMs: number; logger: Logger },
): Promise<void> => {
  listener.stop.abort();
  const stopping = listener.capture?.stop(options.killGraceMs);
  const lease = listener.lease;
  listener.lease = null;
  if (lease !== null) lease.users -= 1;
  if (lease !== null && lease.users === 0) {
    if (borrowedLinks.get(listener.name) === lease) borrowedLinks.delete(listener.name);
    await lease.up.catch(() => undefined);
    try {
      await setLinkAdminState(options.runProcess, listener.name, 'down');
      options.logger.debug({ interface: listener.name }, 'restored the link to down');
    } catch (error) {
      listener.restoreWarning = `could not set ${listener.name} back down: ${errorMessage(error)}`;
      options.logger.warn(
        { interface: listener.name, err: errorMessage(error) },
        'could not restore the link state',
      );
    }
  }
  await stopping;
};

export const collectLldp = async (options: CollectLldpOptions): Promise<InterfaceLldp[]> => {
  const {
    paths,
    timeoutMs,
    carrierWaitMs = DEFAULT_CARRIER_WAIT_MS,
    signal,
    logger,
    onFrame,
    onDone,
    runProcess = defaultRunProcess,
    envPATH = process.env.PATH ?? '',
    killGraceMs = DEFAULT_KILL_GRACE_MS,
  } = options;
  if (!Number.isFinite(timeoutMs) || timeoutMs < 0) {
    throw new TypeError(`Expected timeoutMs to be a non-negative number, got ${String(timeoutMs)}`);
  }
  if (signal?.aborted) throw cancellation(signal);

  const started = performance.now();
  const [names, tcpdump] = await Promise.all([
    options.interfaces === undefined
      ? listPhysicalInterfaces(paths)
      : validateInterfaces(paths, options.interfaces),
    findOnPath('tcpdump', envPATH),
  ]);
  const listeners: Listener[] = names.map((name) => ({
    name,
    result: null,
    carrierSeen: false,
    lease: null,
    capture: null,
    stop: new AbortController(),
    restoreWarning: null,
  }));
  if (listeners.length === 0) return [];

  let doneCount = 0;
  // Once the collection ends, late outcomes of the per-interface work (an aborted carrier wait or
  // link-up) must not overwrite the status the end assigns.
  let closed = false;
  let allDone: () => void = () => undefined;
  const everyoneDone = new Promise<void>((resolve) => {
    allDone = resolve;
  });
  const finish = (listener: Listener, result: InterfaceLldp, final = false): void => {
    if (listener.result !== null || (closed && !final)) return;
    listener.result = result;
    listener.stop.abort();
    doneCount += 1;
    logger.debug(
      { interface: listener.name, status: result.status, after_ms: result.received_after_ms },
      'LLDP interface done',
    );
    // A failing observer must not break the capture: this runs inside tcpdump's stream handlers.
    try {
      if (result.status === 'received') onFrame?.(result);
      onDone?.(result, doneCount, listeners.length);
    } catch (error) {
      logger.warn({ err: errorMessage(error) }, 'an LLDP progress callback failed');
    }
    // Its tcpdump has either exited after its frame (-c 1) or is of no further use.
    void listener.capture?.stop(killGraceMs);
    if (doneCount === listeners.length) allDone();
  };
  const elapsed = (): number => Math.round(performance.now() - started);

  const listen = async (listener: Listener): Promise<void> => {
    const { name } = listener;
    if (tcpdump === null) {
      finish(
        listener,
        emptyResult(name, 'error', {
          error: 'TOOL_NOT_FOUND: tcpdump is not on PATH; it must be installed in the ramdisk',
        }),
      );
      return;
    }
    let lease = borrowedLinks.get(name);
    if (lease === undefined) {
      const state = await readLinkState(paths, name);
      if (listener.stop.signal.aborted) return;
      lease = borrowedLinks.get(name);
      if (state.carrier === true) listener.carrierSeen = true;
      if (lease === undefined && state.up && state.carrier === false) {
        // Already up, so past its link-up wait: a port without carrier now is unplugged, and
        // waiting on it would only hold the result (the 100 ms target counts from the last frame).
        finish(listener, emptyResult(name, 'no_carrier'));
        return;
      }
      if (lease === undefined && !state.up) {
        // tcpdump refuses a down link ("That device is not up"), so the link comes up first.
        lease = { users: 0, up: setLinkAdminState(runProcess, name, 'up') };
        borrowedLinks.set(name, lease);
        logger.debug({ interface: name }, 'bringing the link up for LLDP');
      }
    }
    if (lease !== undefined) {
      lease.users += 1;
      listener.lease = lease;
      try {
        await lease.up;
      } catch (error) {
        finish(
          listener,
          emptyResult(name, 'error', { error: `cannot bring ${name} up: ${errorMessage(error)}` }),
        );
        return;
      }
      if (listener.stop.signal.aborted) return;
    }
    // Capture starts before the carrier wait, so a frame sent right after link-up is not missed.
    listener.capture = startTcpdump(tcpdump, name, (event) => {
      if (event.kind === 'frame')
        finish(listener, decodeFrame(name, event.record, event.linktype, elapsed()));
      else finish(listener, emptyResult(name, 'error', { error: event.message }));
    });
    if (listener.carrierSeen) return;
    // A link the collection just brought up gets a short wait for carrier (autonegotiation).
    listener.carrierSeen = await waitForCarrier(paths, name, {
      timeoutMs: carrierWaitMs,
      signal: listener.stop.signal,
    });
    if (!listener.carrierSeen && listener.result === null) finish(listener, emptyResult(name, 'no_carrier'));
  };

  let deadlineTimer: NodeJS.Timeout | undefined;
  const deadline = new Promise<'deadline'>((resolve) => {
    deadlineTimer = setTimeout(
      () => resolve('deadline'),
      Math.max(0, timeoutMs - (performance.now() - started)),
    );
  });
  let onAbort: () => void = () => undefined;
  const aborted = new Promise<'aborted'>((resolve) => {
    onAbort = () => resolve('aborted');
    signal?.addEventListener('abort', onAbort, { once: true });
  });

  let ending: 'done' | 'deadline' | 'aborted' = 'done';
  try {
    for (const listener of listeners) {
      listen(listener).catch((error: unknown) => {
        finish(listener, emptyResult(listener.name, 'error', { error: errorMessage(error) }));
      });
    }
    ending = await Promise.race([everyoneDone.then(() => 'done' as const), deadline, aborted]);
  } finally {
    closed = true;
    clearTimeout(deadlineTimer);
    signal?.removeEventListener('abort', onAbort);
    await Promise.all(listeners.map((listener) => release(listener, { runProcess, killGraceMs, logger })));
  }
  if (ending === 'aborted' && signal) throw cancellation(signal);

  const results = listeners.map((listener) => {
    if (listener.result !== null) return listener.result;
    // A port that never showed carrier is reported as such even when the timeout cut its wait short.
    const result = emptyResult(listener.name, listener.carrierSeen ? 'timeout' : 'no_carrier');
    finish(listener, result, true);
    return result;
  });
  for (const listener of listeners) {
    if (listener.restoreWarning !== null) listener.result?.warnings.push(listener.restoreWarning);
  }
  logger.info(
    {
      elapsed_ms: elapsed(),
      statuses: Object.fromEntries(results.map((result) => [result.interface, result.status])),
    },
    'LLDP collection finished',
  );
  return results;
};
