import {
  enumParser,
  numberParser,
  parseBool,
  parseMac,
  parsePath,
  parsePin,
  parseText,
  parseUuid,
  urlParser,
  ValueError,
} from './parsers.js';

/** A comma-separated list of paths (`/dev/tty1,/dev/ttyS0`); blanks and repeats are dropped. */
const parsePathList = (raw: string | boolean): string[] => {
  const paths =
    typeof raw === 'string' ? [...new Set(raw.split(',').map((part) => part.trim()))].filter(Boolean) : [];
  if (paths.length === 0 || paths.some((part) => part.includes('\0')))
    throw new ValueError('a comma-separated list of file paths');
  return paths;
};

export const POWER_BACKENDS = ['command', 'sysrq', 'none'] as const;
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error'] as const;
export const ADVERTISE_PROTOCOLS = ['http', 'https'] as const;

/** Ironic's microversion form, `1.68`. */
const parseApiVersion = (raw: string | boolean): string => {
  if (typeof raw !== 'string' || !/^1\.\d{1,3}$/.test(raw.trim()))
    throw new ValueError('a version like 1.68');
  return raw.trim();
};

/** `req-<uuid>`, the form Ironic puts in ipa-global-request-id and logs under. */
const parseRequestId = (raw: string | boolean): string => {
  if (typeof raw !== 'string' || !/^req-[0-9a-fA-F-]{36}$/.test(raw.trim()))
    throw new ValueError('a request id like req-<uuid>');
  return raw.trim();
};

/** An IP literal or host name to bind or advertise (IPv6 without brackets). */
const parseHost = (raw: string | boolean): string => {
  const value = typeof raw === 'string' ? raw.trim().replace(/^\[(.*)\]$/, '$1') : '';
  if (value === '' || !/^[0-9A-Za-z.:%_-]+$/.test(value)) throw new ValueError('a host name or IP address');
  return value;
};

export interface Config {
  conductorUrl: string | null;
  conductorCa: string | null;
  conductorPin: string | null;
  insecure: boolean;
  debug: boolean;
  logLevel: (typeof LOG_LEVELS)[number] | null;
  bootif: string | null;
  nodeUuid: string | null;
  collectLldp: boolean;
  lldpTimeoutS: number;
  ironicApiUrl: string | null;
  inspectionCallbackUrl: string | null;
  ipaListenHost: string | null;
  ipaListenPort: number;
  ipaAdvertiseHost: string | null;
  ipaAdvertisePort: number | null;
  ipaAdvertiseProtocol: (typeof ADVERTISE_PROTOCOLS)[number];
  ipaTlsCert: string | null;
  ipaTlsKey: string | null;
  ipaLookupTimeoutS: number;
  ipaLookupIntervalS: number;
  ipaAgentToken: string | null;
  ipaApiVersion: string | null;
  ipaGlobalRequestId: string | null;
  includeLoopDisks: boolean;
  powerBackend: (typeof POWER_BACKENDS)[number];
  pingIntervalS: number;
  pongTimeoutS: number;
  backoffMinS: number;
  backoffMaxS: number;
  sysRoot: string;
  devRoot: string;
  procRoot: string;
  runRoot: string;
  imageCa: string | null;
  stagingDir: string;
  imageDirectIo: boolean;
  imageStallTimeoutS: number;
  imageRetries: number;
  imageRetryIntervalS: number;
  inspectAtBoot: boolean;
  bfbUrl: string | null;
  bfbChecksum: string | null;
  bfbTimeoutS: number;
  stateDir: string;
  dpuSshKey: string | null;
  statusConsole: string[] | null;
  statusDumb: boolean;
}

export type ConfigKey = keyof Config;

export interface OptionSpec<K extends ConfigKey = ConfigKey> {
  key: K;
  /** Kernel arguments that set it; IPA's names keep IPA's meaning. */
  kernel: string[];
  env: string | null;
  flag: string | null;
  parse: (raw: string | boolean) => NonNullable<Config[K]>;
  default: Config[K];
  describe: string;
  boolean?: boolean;
}

const option = <K extends ConfigKey>(spec: OptionSpec<K>): OptionSpec => spec as unknown as OptionSpec;

/** Every setting, where it may come from, and what it means: the README table is made from this. */
export const OPTIONS: OptionSpec[] = [
  option({
    key: 'conductorUrl',
    kernel: ['bma-conductor-url'],
    env: 'BMA_CONDUCTOR_URL',
    flag: 'conductor-url',
    parse: urlParser(['ws', 'wss']),
    default: null,
    describe: 'WebSocket URL of the conductor (ws:// only with insecure)',
  }),
  option({
    key: 'conductorCa',
    kernel: ['bma-conductor-ca'],
    env: 'BMA_CONDUCTOR_CA',
    flag: 'conductor-ca',
    parse: parsePath,
    default: null,
    describe: 'CA bundle (PEM) that verifies the conductor, and Ironic and the inspector on https',
  }),
  option({
    key: 'conductorPin',
    kernel: ['bma-conductor-pin'],
    env: 'BMA_CONDUCTOR_PIN',
    flag: 'conductor-pin',
    parse: parsePin,
    default: null,
    describe: "sha256/<base64> pin of the conductor certificate's public key (SPKI)",
  }),
  option({
    key: 'insecure',
    kernel: ['ipa-insecure'],
    env: 'BMA_INSECURE',
    flag: 'insecure',
    parse: parseBool,
    default: false,
    boolean: true,
    describe: 'allow ws:// and unverified wss:// to the conductor, and unverified https to image servers',
  }),
  option({
    key: 'debug',
    kernel: ['ipa-debug'],
    env: 'BMA_DEBUG',
    flag: 'debug',
    parse: parseBool,
    default: false,
    boolean: true,
    describe: 'log at debug level',
  }),
  option({
    key: 'logLevel',
    kernel: ['bma-log-level'],
    env: 'BMA_LOG_LEVEL',
    flag: 'log-level',
    parse: enumParser(LOG_LEVELS),
    default: null,
    describe: 'log level; overrides debug',
  }),
  option({
    key: 'bootif',
    kernel: ['BOOTIF'],
    env: 'BMA_BOOTIF',
    flag: 'bootif',
    parse: parseMac,
    default: null,
    describe: 'MAC of the interface the node PXE-booted from (01-aa-bb-... accepted)',
  }),
  option({
    key: 'nodeUuid',
    kernel: ['bma-node-uuid'],
    env: 'BMA_NODE_UUID',
    flag: 'node-uuid',
    parse: parseUuid,
    default: null,
    describe: 'node UUID to announce in hello, when the conductor already knows it',
  }),
  option({
    key: 'collectLldp',
    kernel: ['ipa-collect-lldp'],
    env: 'BMA_COLLECT_LLDP',
    flag: 'collect-lldp',
    parse: parseBool,
    default: false,
    boolean: true,
    describe: 'collect LLDP with every inventory',
  }),
  option({
    key: 'lldpTimeoutS',
    kernel: ['ipa-lldp-timeout'],
    env: 'BMA_LLDP_TIMEOUT',
    flag: 'lldp-timeout',
    parse: numberParser(0, 600),
    default: 30,
    describe: 'seconds to wait for LLDP frames',
  }),
  option({
    key: 'ironicApiUrl',
    kernel: ['ipa-api-url'],
    env: 'BMA_IPA_API_URL',
    flag: 'ipa-api-url',
    parse: urlParser(['http', 'https']),
    default: null,
    describe: 'Ironic API URL (the ironic-python-agent compatible front door)',
  }),
  option({
    key: 'inspectionCallbackUrl',
    kernel: ['ipa-inspection-callback-url'],
    env: 'BMA_IPA_INSPECTION_CALLBACK_URL',
    flag: 'ipa-inspection-callback-url',
    parse: urlParser(['http', 'https']),
    default: null,
    describe: 'ironic-inspector callback URL',
  }),
  option({
    key: 'ipaListenHost',
    kernel: ['ipa-listen-host'],
    env: 'BMA_IPA_LISTEN_HOST',
    flag: 'ipa-listen-host',
    parse: parseHost,
    default: null,
    describe: 'address the agent API (for Ironic) listens on (default :: when IPv6 is up, else 0.0.0.0)',
  }),
  option({
    key: 'ipaListenPort',
    kernel: ['ipa-listen-port'],
    env: 'BMA_IPA_LISTEN_PORT',
    flag: 'ipa-listen-port',
    parse: numberParser(1, 65535),
    default: 9999,
    describe: 'port of the agent API for Ironic',
  }),
  option({
    key: 'ipaAdvertiseHost',
    kernel: ['ipa-advertise-host'],
    env: 'BMA_IPA_ADVERTISE_HOST',
    flag: 'ipa-advertise-host',
    parse: parseHost,
    default: null,
    describe: "host in the callback URL sent to Ironic (default: this node's source address towards Ironic)",
  }),
  option({
    key: 'ipaAdvertisePort',
    kernel: ['ipa-advertise-port'],
    env: 'BMA_IPA_ADVERTISE_PORT',
    flag: 'ipa-advertise-port',
    parse: numberParser(1, 65535),
    default: null,
    describe: 'port in the callback URL (default: ipa-listen-port)',
  }),
  option({
    key: 'ipaAdvertiseProtocol',
    kernel: ['ipa-advertise-protocol'],
    env: 'BMA_IPA_ADVERTISE_PROTOCOL',
    flag: 'ipa-advertise-protocol',
    parse: enumParser(ADVERTISE_PROTOCOLS),
    default: 'http',
    describe: 'scheme of the callback URL; https whenever the agent API has a certificate',
  }),
  option({
    key: 'ipaTlsCert',
    kernel: ['bma-ipa-tls-cert'],
    env: 'BMA_IPA_TLS_CERT',
    flag: 'ipa-tls-cert',
    parse: parsePath,
    default: null,
    describe: 'certificate (PEM) the agent API serves; Ironic then calls it over https',
  }),
  option({
    key: 'ipaTlsKey',
    kernel: ['bma-ipa-tls-key'],
    env: 'BMA_IPA_TLS_KEY',
    flag: 'ipa-tls-key',
    parse: parsePath,
    default: null,
    describe: 'private key (PEM) of bma-ipa-tls-cert',
  }),
  option({
    key: 'ipaLookupTimeoutS',
    kernel: ['ipa-lookup-timeout'],
    env: 'BMA_IPA_LOOKUP_TIMEOUT',
    flag: 'ipa-lookup-timeout',
    parse: numberParser(1, 24 * 3600),
    default: 300,
    describe: 'seconds to keep retrying the node lookup before the agent exits (and is restarted)',
  }),
  option({
    key: 'ipaLookupIntervalS',
    kernel: ['ipa-lookup-interval'],
    env: 'BMA_IPA_LOOKUP_INTERVAL',
    flag: 'ipa-lookup-interval',
    parse: numberParser(0.01, 60),
    default: 1,
    describe: 'first wait between lookups (random exponential backoff up to 60 s)',
  }),
  option({
    key: 'ipaAgentToken',
    kernel: ['ipa-agent-token'],
    env: 'BMA_IPA_AGENT_TOKEN',
    flag: 'ipa-agent-token',
    parse: parseText,
    default: null,
    describe: 'agent token handed out in advance (virtual media boots); otherwise the lookup brings it',
  }),
  option({
    key: 'ipaApiVersion',
    kernel: ['ipa-ironic-api-version'],
    env: 'BMA_IPA_API_VERSION',
    flag: 'ipa-ironic-api-version',
    parse: parseApiVersion,
    default: null,
    describe: 'fixed Ironic API microversion instead of asking Ironic for its maximum',
  }),
  option({
    key: 'ipaGlobalRequestId',
    kernel: ['ipa-global-request-id'],
    env: 'BMA_IPA_GLOBAL_REQUEST_ID',
    flag: 'ipa-global-request-id',
    parse: parseRequestId,
    default: null,
    describe: 'request id sent to Ironic as X-OpenStack-Request-ID, so its logs tie to this boot',
  }),
  option({
    key: 'includeLoopDisks',
    kernel: ['bma-include-loop-disks'],
    env: 'BMA_INCLUDE_LOOP_DISKS',
    flag: 'include-loop-disks',
    parse: parseBool,
    default: false,
    boolean: true,
    describe:
      'count loop devices as disks for root device hints, the default root disk and erasing every disk (lab rigs whose disks are loop devices)',
  }),
  option({
    key: 'powerBackend',
    kernel: ['bma-power-backend'],
    env: 'BMA_POWER_BACKEND',
    flag: 'power-backend',
    parse: enumParser(POWER_BACKENDS),
    default: 'command',
    describe: 'how power actions happen: command (poweroff -f / reboot -f), sysrq, or none (log only)',
  }),
  option({
    key: 'pingIntervalS',
    kernel: ['bma-ping-interval'],
    env: 'BMA_PING_INTERVAL',
    flag: 'ping-interval',
    parse: numberParser(0.05, 300),
    default: 15,
    describe: 'seconds between WebSocket pings',
  }),
  option({
    key: 'pongTimeoutS',
    kernel: ['bma-pong-timeout'],
    env: 'BMA_PONG_TIMEOUT',
    flag: 'pong-timeout',
    parse: numberParser(0.1, 600),
    default: 30,
    describe: 'seconds without a pong before the connection counts as dead',
  }),
  option({
    key: 'backoffMinS',
    kernel: ['bma-backoff-min'],
    env: 'BMA_BACKOFF_MIN',
    flag: 'backoff-min',
    parse: numberParser(0.01, 600),
    default: 1,
    describe: 'first reconnect backoff ceiling in seconds (full jitter)',
  }),
  option({
    key: 'backoffMaxS',
    kernel: ['bma-backoff-max'],
    env: 'BMA_BACKOFF_MAX',
    flag: 'backoff-max',
    parse: numberParser(0.01, 3600),
    default: 60,
    describe: 'largest reconnect backoff in seconds',
  }),
  option({
    key: 'sysRoot',
    kernel: [],
    env: 'BMA_SYS',
    flag: 'sys-root',
    parse: parsePath,
    default: '/sys',
    describe: 'where sysfs is (tests point it at a prepared tree)',
  }),
  option({
    key: 'devRoot',
    kernel: [],
    env: 'BMA_DEV',
    flag: 'dev-root',
    parse: parsePath,
    default: '/dev',
    describe: 'where device nodes are',
  }),
  option({
    key: 'procRoot',
    kernel: [],
    env: 'BMA_PROC',
    flag: 'proc-root',
    parse: parsePath,
    default: '/proc',
    describe: 'where procfs is (boot_id, sysrq-trigger)',
  }),
  option({
    key: 'runRoot',
    kernel: [],
    env: 'BMA_RUN',
    flag: 'run-root',
    parse: parsePath,
    default: '/run',
    describe: "where /run is (udev's database of disk serials and WWNs)",
  }),
  option({
    key: 'imageCa',
    kernel: ['bma-image-ca'],
    env: 'BMA_IMAGE_CA',
    flag: 'image-ca',
    parse: parsePath,
    default: null,
    describe: 'CA bundle (PEM) that verifies https image and checksum servers (the system store when unset)',
  }),
  option({
    key: 'stagingDir',
    kernel: ['bma-staging-dir'],
    env: 'BMA_STAGING_DIR',
    flag: 'staging-dir',
    parse: parsePath,
    default: '/tmp',
    describe:
      'where images that cannot be streamed (qcow2 and other qemu formats) are staged; a tmpfs in the ramdisk',
  }),
  option({
    key: 'imageDirectIo',
    kernel: ['bma-image-direct-io'],
    env: 'BMA_IMAGE_DIRECT_IO',
    flag: 'image-direct-io',
    parse: parseBool,
    default: true,
    boolean: true,
    describe: 'write images with O_DIRECT (falls back to buffered writes where the device refuses it)',
  }),
  option({
    key: 'imageStallTimeoutS',
    kernel: ['ipa-image-download-connection-timeout'],
    env: 'BMA_IMAGE_STALL_TIMEOUT',
    flag: 'image-stall-timeout',
    parse: numberParser(1, 3600),
    default: 60,
    describe: 'seconds without a byte from the image server before the connection counts as stalled',
  }),
  option({
    key: 'imageRetries',
    kernel: ['ipa-image-download-connection-retries'],
    env: 'BMA_IMAGE_RETRIES',
    flag: 'image-retries',
    parse: numberParser(0, 100),
    default: 9,
    describe: 'attempts after the first for connection errors, 5xx, stalls and drops (resumed with Range)',
  }),
  option({
    key: 'imageRetryIntervalS',
    kernel: ['ipa-image-download-connection-retry-interval'],
    env: 'BMA_IMAGE_RETRY_INTERVAL',
    flag: 'image-retry-interval',
    parse: numberParser(0.01, 600),
    default: 10,
    describe: 'longest wait between two download attempts (jittered backoff from 1 s up to this)',
  }),
  option({
    key: 'inspectAtBoot',
    kernel: ['bma-inspect'],
    env: 'BMA_INSPECT',
    flag: 'inspect',
    parse: parseBool,
    default: false,
    boolean: true,
    describe:
      'run inspect.run at start without waiting for the conductor (id `agent:inspect`), with the BFB of bma-bfb-url when given',
  }),
  option({
    key: 'bfbUrl',
    kernel: ['bma-bfb-url'],
    env: 'BMA_BFB_URL',
    flag: 'bfb-url',
    parse: urlParser(['http', 'https']),
    default: null,
    describe:
      'BFB to install on every BlueField during the boot-time inspect.run (its download starts at once)',
  }),
  option({
    key: 'bfbChecksum',
    kernel: ['bma-bfb-checksum'],
    env: 'BMA_BFB_CHECKSUM',
    flag: 'bfb-checksum',
    parse: parseText,
    default: null,
    describe: 'checksum of bma-bfb-url: `sha256:<hex>`, a bare hex, or the URL of a checksums file',
  }),
  option({
    key: 'bfbTimeoutS',
    kernel: ['bma-bfb-timeout'],
    env: 'BMA_BFB_TIMEOUT',
    flag: 'bfb-timeout',
    parse: numberParser(10, 6 * 3600),
    default: 1800,
    describe: 'default seconds a BFB install may take from the push to the DPU reporting ready',
  }),
  option({
    key: 'stateDir',
    kernel: ['bma-state-dir'],
    env: 'BMA_STATE_DIR',
    flag: 'state-dir',
    parse: parsePath,
    default: '/run/bm-agent',
    describe:
      "where the agent keeps what it makes at boot: the SSH key pair for the DPUs' Arm systems, known_hosts",
  }),
  option({
    key: 'dpuSshKey',
    kernel: ['bma-dpu-ssh-key'],
    env: 'BMA_DPU_SSH_KEY',
    flag: 'dpu-ssh-key',
    parse: parsePath,
    default: null,
    describe: "private key for SSH to the DPUs' Arm systems instead of the key pair made at boot",
  }),
  option({
    key: 'statusConsole',
    kernel: ['bma-status-console'],
    env: 'BMA_STATUS_CONSOLE',
    flag: 'status-console',
    parse: parsePathList,
    default: null,
    describe:
      'comma-separated devices to show the live status screen on, e.g. /dev/tty1,/dev/ttyS0 (one that cannot be opened is logged and skipped)',
  }),
  option({
    key: 'statusDumb',
    kernel: ['bma-status-dumb'],
    env: 'BMA_STATUS_DUMB',
    flag: 'status-dumb',
    parse: parseBool,
    default: false,
    boolean: true,
    describe: 'show the status screen as plain appended lines, one per change, even on a terminal',
  }),
];

/**
 * ironic-python-agent arguments that Ironic's boot templates pass but bm-agent does not act on;
 * they are noted at debug level rather than warned about on every boot.
 */
export const IPA_ARGS_NOT_USED = new Set([
  // Read by the ramdisk's init, not by the agent (image-build/README.md).
  'bma-debug-shell',
  'bma-ssh-key',
  'bma-init-debug',
  'bma-modules',
  'bma-ntp-server',
  'ipa-agent-token-required',
  'ipa-inspection-collectors',
  'ipa-inspection-dhcp-wait-timeout',
  'ipa-inspection-dhcp-all-interfaces',
  'ipa-inspection-benchmarks',
  'ipa-hardware-initialization-delay',
  'ipa-disk-wait-attempts',
  'ipa-disk-wait-delay',
  'ipa-enable-vlan-interfaces',
  'ipa-ignore-bootloader-failure',
  'ipa-inject-files-priority',
  'ipa-guard-special-filesystems',
  'ipa-ntp-server',
  'ipa-network-interface',
  'ipa-ip-lookup-attempts',
  'ipa-ip-lookup-timeout',
]);
