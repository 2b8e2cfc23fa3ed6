/**
 * The bf.cfg pushed after the BFB. The DPU installer reads what is left in the boot FIFO after the
 * BFB, checks it with `bash -n`, installs it as /etc/bf.cfg, sources it with bash and later calls
 * `bfb_modify_os` with the installed root mounted at /mnt. The conductor may send its own bf.cfg
 * (passwords, hooks, firmware options); the agent adds its SSH public key so it can reach the
 * DPU's Arm system afterwards. Bash has one function per name, so a `bfb_modify_os` the
 * conductor defined is renamed when the file is sourced and called first from the agent's.
 */
import { AgentError } from '../../../util/errors.js';
import { findOnPath, runProcess } from '../../../util/run-process.js';

export interface BfCfgInput {
  /** The conductor's bf.cfg text, sent as it is first. */
  conductorCfg: string | null;
  /** One OpenSSH public key line for /root/.ssh/authorized_keys on the installed system. */
  agentPublicKey: string | null;
}

export interface MergeBfCfgOptions {
  /** PATH where bash is looked up (the agent's when absent). */
  env?: Record<string, string>;
  signal?: AbortSignal;
}

/** The name a conductor's own `bfb_modify_os` lives under once the file is sourced. */
export const CONDUCTOR_HOOK_NAME = 'bm_agent_conductor_bfb_modify_os';
/** Found in the agent's functions, so sourcing the file twice never wraps the agent's hook in itself. */
const HOOK_MARKER = '__bm_agent_hook__';

const KEY_TYPES =
  /^(ssh-(rsa|dss|ed25519)|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com)$/;

/** Single quotes for bash: nothing inside is expanded. */
const shellQuote = (text: string): string => `'${text.replace(/'/g, `'\\''`)}'`;

const checkPublicKey = (key: string): string => {
  const line = key.trim();
  // Control characters could end the quoted word early or add lines to authorized_keys.
  if ([...line].some((char) => char.charCodeAt(0) < 0x20 || char.charCodeAt(0) === 0x7f)) {
    throw new AgentError(
      'INVALID_PARAMS',
      'the agent public key must be one line without control characters',
      {
        details: { field: 'agentPublicKey' },
      },
    );
  }
  const [type, blob] = line.split(/\s+/);
  if (
    type === undefined ||
    !KEY_TYPES.test(type) ||
    blob === undefined ||
    !/^[A-Za-z0-9+/]+={0,3}$/.test(blob)
  ) {
    throw new AgentError('INVALID_PARAMS', 'the agent public key is not an OpenSSH public key line', {
      details: { field: 'agentPublicKey', type: type ?? null },
    });
  }
  return line;
};

const agentBlock = (key: string): string => `
# --- added by bm-agent ---
# The installer calls bfb_modify_os with the installed root at /mnt. A bfb_modify_os defined above
# is kept as ${CONDUCTOR_HOOK_NAME} and runs first; then the agent's key is authorized.
unset -f ${CONDUCTOR_HOOK_NAME} 2>/dev/null || true
if declare -F bfb_modify_os >/dev/null 2>&1; then
  bm_agent_hook_def=$(declare -f bfb_modify_os)
  case $bm_agent_hook_def in
    *${HOOK_MARKER}*) ;;
    *) eval "${CONDUCTOR_HOOK_NAME}\${bm_agent_hook_def#bfb_modify_os}" ;;
  esac
  unset bm_agent_hook_def
fi

bm_agent_authorize_key() {
  : ${HOOK_MARKER}
  local key=${shellQuote(key)}
  local dir=/mnt/root/.ssh
  mkdir -p "$dir" || return $?
  chmod 700 "$dir" || return $?
  if [ -f "$dir/authorized_keys" ] && grep -qxF -- "$key" "$dir/authorized_keys"; then
    return 0
  fi
  # A last line without its newline would otherwise be joined with the key.
  if [ -s "$dir/authorized_keys" ] && [ -n "$(tail -c 1 "$dir/authorized_keys")" ]; then
    printf '\\n' >>"$dir/authorized_keys" || return $?
  fi
  printf '%s\\n' "$key" >>"$dir/authorized_keys" || return $?
  chmod 600 "$dir/authorized_keys"
}

bfb_modify_os() {
  : ${HOOK_MARKER}
  local bm_agent_rc=0
  if declare -F ${CONDUCTOR_HOOK_NAME} >/dev/null 2>&1; then
    ${CONDUCTOR_HOOK_NAME} "$@" || bm_agent_rc=$?
  fi
  bm_agent_authorize_key || return $?
  return $bm_agent_rc
}
# --- end of bm-agent's addition ---
`;

/**
 * The bf.cfg text without the syntax check: the conductor's text first (unchanged), then the
 * agent's hook when there is a key. Empty when there is neither.
 */
export const composeBfCfg = (input: BfCfgInput): string => {
  const parts: string[] = [];
  const conductor = input.conductorCfg ?? '';
  if (conductor !== '') parts.push(conductor.endsWith('\n') ? conductor : `${conductor}\n`);
  if (input.agentPublicKey !== null) parts.push(agentBlock(checkPublicKey(input.agentPublicKey)));
  return parts.join('');
};

const conductorLineCount = (input: BfCfgInput): number =>
  input.conductorCfg === null || input.conductorCfg === ''
    ? 0
    : input.conductorCfg.replace(/\n$/, '').split('\n').length;

/**
 * composeBfCfg, then `bash -n` over the result when bash exists here: the installer runs the same
 * check and silently ignores a bf.cfg that fails it, so a bad one is refused before any push.
 * Line numbers in the error are the conductor's, since its text comes first.
 */
export const mergeBfCfg = async (input: BfCfgInput, options: MergeBfCfgOptions = {}): Promise<string> => {
  const text = composeBfCfg(input);
  if (text === '') return text;
  const envPATH = options.env?.PATH ?? process.env.PATH ?? '';
  if ((await findOnPath('bash', envPATH)) === null) return text;
  try {
    await runProcess('bash', ['-n'], {
      input: text,
      timeoutMs: 10_000,
      ...(options.env === undefined ? {} : { env: options.env }),
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
  } catch (error) {
    if (!AgentError.is(error) || error.code !== 'TOOL_FAILED' || error.details.exitCode === null) throw error;
    const stderr = typeof error.details.stderrTail === 'string' ? error.details.stderrTail : '';
    const first = stderr.split('\n').find((line) => line.trim() !== '') ?? 'bash -n failed';
    throw new AgentError('INVALID_PARAMS', `the bf.cfg is not valid bash: ${first.trim()}`, {
      details: { field: 'bf_cfg', stderr, conductor_lines: conductorLineCount(input) },
    });
  }
  return text;
};
