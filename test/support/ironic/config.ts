/**
 * ironic.conf for an all-in-one Ironic on 127.0.0.1: noauth, no RPC bus, sqlite, fake-hardware with the
 * `direct` deploy interface, and timings short enough for tests. Every file Ironic writes lands in the
 * work dir, so one test run never sees another's state.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';

export type ImageDownloadSource = 'http' | 'local' | 'swift';
export type DeployLogsCollect = 'always' | 'on_failure' | 'never';
export type ConfValue = string | number | boolean;

export interface IronicConfigOptions {
  /** Absolute; created when missing. */
  workDir: string;
  apiPort: number;
  /** The conductor's name in Ironic's database ([DEFAULT] host). */
  hostName?: string;
  /** Sent to the agent in the lookup answer; it heartbeats at 0.3–0.6 of it (Ironic's default is 300). */
  heartbeatTimeoutS?: number;
  automatedClean?: boolean;
  deployCallbackTimeoutS?: number;
  cleanCallbackTimeoutS?: number;
  /** How often the conductor checks those callback timeouts (Ironic's default is 60). */
  checkProvisionStateIntervalS?: number;
  /** How often the conductor polls GET /v1/commands/ for a command it waits on (Ironic's default is 6). */
  commandWaitIntervalS?: number;
  /** Timeout of one HTTP request to the agent (Ironic's default is 60). */
  commandTimeoutS?: number;
  maxCommandAttempts?: number;
  /** `http` hands the node's http image_source to the agent as is. */
  imageDownloadSource?: ImageDownloadSource;
  /** Priorities for automated cleaning; 0 leaves the step out. */
  eraseDevicesPriority?: number;
  eraseDevicesMetadataPriority?: number;
  fastTrack?: boolean;
  deployLogsCollect?: DeployLogsCollect;
  debug?: boolean;
  /** More settings, or overrides, by section: `{conductor: {power_state_change_timeout: 5}}`. */
  extra?: Record<string, Record<string, ConfValue>>;
}

/** Where the harness and Ironic keep things inside a work dir. */
export interface IronicPaths {
  workDir: string;
  confPath: string;
  stateDir: string;
  databasePath: string;
  logDir: string;
  /** Ironic's own log, at debug level when `debug` is on. */
  logPath: string;
  /** The process's stdout and stderr: start-up tracebacks land here. */
  stdoutPath: string;
  dbsyncLogPath: string;
  /** `<node uuid>_<name>[_cleaning]_<date>.tar.gz`, the agent's logs collected after a failure. */
  deployLogsDir: string;
  /**
   * [deploy] http_root: with image_download_source `local`, `agent_images/<node uuid>` is a symlink
   * to the image Ironic cached for the node, which the agent fetches from [deploy] http_url.
   */
  httpRoot: string;
}

export const ironicPaths = (workDir: string): IronicPaths => {
  const logDir = path.join(workDir, 'log');
  const stateDir = path.join(workDir, 'state');
  return {
    workDir,
    confPath: path.join(workDir, 'ironic.conf'),
    stateDir,
    databasePath: path.join(stateDir, 'ironic.sqlite'),
    logDir,
    logPath: path.join(logDir, 'ironic.log'),
    stdoutPath: path.join(logDir, 'ironic.stdout'),
    dbsyncLogPath: path.join(logDir, 'dbsync.log'),
    deployLogsDir: path.join(logDir, 'deploy_logs'),
    httpRoot: path.join(stateDir, 'httpboot'),
  };
};

const SECTION_NAME = /^[A-Za-z0-9_.-]+$/;
const KEY_NAME = /^[A-Za-z0-9_]+$/;

const expectInteger = (name: string, value: number, min: number, max = Number.MAX_SAFE_INTEGER): number => {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new TypeError(
      `Expected ${name} to be an integer from ${min} to ${max}, got ${String(value)} (${typeof value})`,
    );
  }
  return value;
};

const expectOneOf = <T extends string>(name: string, value: T, allowed: readonly T[]): T => {
  if (!allowed.includes(value)) {
    throw new TypeError(`Expected ${name} to be one of ${allowed.join(', ')}, got ${JSON.stringify(value)}`);
  }
  return value;
};

const renderValue = (where: string, value: ConfValue): string => {
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new TypeError(`Expected ${where} to be a finite number, got ${value}`);
    return String(value);
  }
  // A line break would start a new option that the caller never asked for.
  if (/[\r\n]/.test(value))
    throw new TypeError(`Expected ${where} to be one line, got ${JSON.stringify(value)}`);
  return value;
};

/** The sections of ironic.conf, before `extra` is merged in. */
const baseSections = (
  options: IronicConfigOptions,
  paths: IronicPaths,
): Record<string, Record<string, ConfValue>> => {
  const hostName = options.hostName ?? 'bm-agent-test';
  if (!/^[A-Za-z0-9.-]+$/.test(hostName)) {
    throw new TypeError(`Expected hostName to be a host name, got ${JSON.stringify(hostName)}`);
  }
  return {
    DEFAULT: {
      auth_strategy: 'noauth',
      // API and conductor share one process and call each other directly: no message bus.
      rpc_transport: 'none',
      host: hostName,
      my_ip: '127.0.0.1',
      debug: options.debug ?? true,
      log_dir: paths.logDir,
      log_file: path.basename(paths.logPath),
      use_stderr: false,
      // oslo.service waits this long for a graceful stop before it gives up; the default is 60 s.
      graceful_shutdown_timeout: 5,
      state_path: paths.stateDir,
      tempdir: path.join(paths.workDir, 'tmp'),
      // Every interface list is narrowed: Ironic loads each enabled one at start-up, and the defaults
      // name ipmitool, redfish and cinder, which need programs and services that are not here.
      enabled_hardware_types: 'fake-hardware',
      enabled_boot_interfaces: 'fake',
      enabled_deploy_interfaces: 'direct,fake',
      enabled_power_interfaces: 'fake',
      enabled_management_interfaces: 'fake',
      // `flat` would want Neutron.
      enabled_network_interfaces: 'noop',
      enabled_raid_interfaces: 'no-raid,agent,fake',
      enabled_bios_interfaces: 'no-bios,fake',
      enabled_console_interfaces: 'no-console,fake',
      enabled_inspect_interfaces: 'no-inspect,fake',
      enabled_rescue_interfaces: 'no-rescue,fake',
      enabled_storage_interfaces: 'noop,fake',
      enabled_vendor_interfaces: 'no-vendor,fake',
      default_boot_interface: 'fake',
      default_deploy_interface: 'direct',
      default_power_interface: 'fake',
      default_management_interface: 'fake',
      default_network_interface: 'noop',
      default_raid_interface: 'agent',
      default_bios_interface: 'no-bios',
      default_console_interface: 'no-console',
      default_inspect_interface: 'no-inspect',
      default_rescue_interface: 'no-rescue',
      default_storage_interface: 'noop',
      default_vendor_interface: 'no-vendor',
    },
    api: {
      host_ip: '127.0.0.1',
      // The single process serves the API from a green thread; more workers would only cost memory.
      api_workers: 1,
      port: expectInteger('apiPort', options.apiPort, 1, 65_535),
      ramdisk_heartbeat_timeout: expectInteger('heartbeatTimeoutS', options.heartbeatTimeoutS ?? 30, 1),
    },
    // Without it, preparing a node for cleaning or deploying asks Keystone for Ironic's own URL and fails.
    service_catalog: { endpoint_override: `http://127.0.0.1:${options.apiPort}` },
    database: { connection: `sqlite:///${paths.databasePath}` },
    dhcp: { dhcp_provider: 'none' },
    oslo_concurrency: { lock_path: path.join(paths.workDir, 'lock') },
    conductor: {
      automated_clean: options.automatedClean ?? false,
      deploy_callback_timeout: expectInteger(
        'deployCallbackTimeoutS',
        options.deployCallbackTimeoutS ?? 600,
        1,
      ),
      clean_callback_timeout: expectInteger('cleanCallbackTimeoutS', options.cleanCallbackTimeoutS ?? 600, 1),
      check_provision_state_interval: expectInteger(
        'checkProvisionStateIntervalS',
        options.checkProvisionStateIntervalS ?? 10,
        1,
      ),
      // The fake power interface has nothing to sync; the periodic task would only add log noise.
      sync_power_state_interval: -1,
    },
    deploy: {
      erase_devices_priority: expectInteger('eraseDevicesPriority', options.eraseDevicesPriority ?? 0, 0),
      erase_devices_metadata_priority: expectInteger(
        'eraseDevicesMetadataPriority',
        options.eraseDevicesMetadataPriority ?? 10,
        0,
      ),
      fast_track: options.fastTrack ?? false,
      http_root: paths.httpRoot,
    },
    agent: {
      image_download_source: expectOneOf('imageDownloadSource', options.imageDownloadSource ?? 'http', [
        'http',
        'local',
        'swift',
      ]),
      command_wait_interval: expectInteger('commandWaitIntervalS', options.commandWaitIntervalS ?? 1, 1),
      command_timeout: expectInteger('commandTimeoutS', options.commandTimeoutS ?? 30, 1),
      max_command_attempts: expectInteger('maxCommandAttempts', options.maxCommandAttempts ?? 2, 1),
      // tear_down_agent polls the (fake) power state after power_off; the defaults wait 30 s.
      post_deploy_get_power_state_retries: 2,
      post_deploy_get_power_state_retry_interval: 1,
      deploy_logs_collect: expectOneOf('deployLogsCollect', options.deployLogsCollect ?? 'on_failure', [
        'always',
        'on_failure',
        'never',
      ]),
      deploy_logs_storage_backend: 'local',
      deploy_logs_local_path: paths.deployLogsDir,
    },
    pxe: {
      tftp_root: path.join(paths.stateDir, 'tftpboot'),
      images_path: path.join(paths.stateDir, 'images'),
      instance_master_path: path.join(paths.stateDir, 'master_images'),
    },
  };
};

/** The text of ironic.conf; throws TypeError for an option out of range. */
export const renderIronicConf = (options: IronicConfigOptions): string => {
  if (!path.isAbsolute(options.workDir)) {
    throw new TypeError(`Expected workDir to be an absolute path, got ${JSON.stringify(options.workDir)}`);
  }
  const sections = baseSections(options, ironicPaths(options.workDir));
  for (const [section, values] of Object.entries(options.extra ?? {})) {
    if (!SECTION_NAME.test(section))
      throw new TypeError(`Expected a section name, got ${JSON.stringify(section)}`);
    sections[section] = { ...sections[section], ...values };
  }
  const lines: string[] = [];
  for (const [section, values] of Object.entries(sections)) {
    lines.push(`[${section}]`);
    for (const [key, value] of Object.entries(values)) {
      if (!KEY_NAME.test(key))
        throw new TypeError(`Expected an option name in [${section}], got ${JSON.stringify(key)}`);
      lines.push(`${key} = ${renderValue(`[${section}] ${key}`, value)}`);
    }
    lines.push('');
  }
  return lines.join('\n');
};

/** Writes ironic.conf and creates the directories it names. */
export const writeIronicConf = async (options: IronicConfigOptions): Promise<IronicPaths> => {
  const text = renderIronicConf(options);
  const paths = ironicPaths(options.workDir);
  for (const dir of [paths.stateDir, paths.logDir, paths.deployLogsDir])
    await mkdir(dir, { recursive: true });
  for (const name of ['tmp', 'lock']) await mkdir(path.join(paths.workDir, name), { recursive: true });
  await writeFile(paths.confPath, text, { mode: 0o600 });
  return paths;
};
