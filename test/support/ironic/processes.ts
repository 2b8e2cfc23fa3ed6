/**
 * What a process group is doing, read from procfs: its members and the sockets they bound. The
 * harness uses it to prove that Ironic listens on loopback only and that stop() leaves nothing behind.
 */
import { readdir, readFile, readlink } from 'node:fs/promises';

export interface BoundSocket {
  protocol: 'tcp' | 'tcp6' | 'udp' | 'udp6';
  address: string;
  port: number;
  pid: number;
}

/** Pids whose process group is `pgid`; zombies included, since they still hold the group. */
export const processGroupMembers = async (pgid: number): Promise<number[]> => {
  const members: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = await readFile(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // exited while we looked
    }
    // The command name in parentheses may hold spaces and parentheses; the fields after the last ')' do not.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(fields[2]) === pgid) members.push(Number(entry));
  }
  return members;
};

/** Pids whose command line contains `needle` (e.g. a work dir's config path). */
export const processesMentioning = async (needle: string): Promise<number[]> => {
  const found: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8');
      if (cmdline.split('\0').some((arg) => arg.includes(needle))) found.push(Number(entry));
    } catch {
      continue;
    }
  }
  return found;
};

const socketInodes = async (pid: number): Promise<Set<string>> => {
  const inodes = new Set<string>();
  let fds: string[];
  try {
    fds = await readdir(`/proc/${pid}/fd`);
  } catch {
    return inodes;
  }
  for (const fd of fds) {
    try {
      const match = /^socket:\[(\d+)\]$/.exec(await readlink(`/proc/${pid}/fd/${fd}`));
      if (match?.[1]) inodes.add(match[1]);
    } catch {
      continue;
    }
  }
  return inodes;
};

// /proc/net/tcp prints addresses as the kernel holds them: 32-bit words in host (little-endian) order.
const decodeAddress = (hex: string): string => {
  const words = (hex.match(/.{8}/g) ?? []).map((word) =>
    Buffer.from(word, 'hex').reverse().toString('hex').padStart(8, '0'),
  );
  if (words.length === 1) {
    const bytes = Buffer.from(words[0] ?? '', 'hex');
    return [...bytes].join('.');
  }
  const groups = words.join('').match(/.{4}/g) ?? [];
  return groups.map((group) => group.replace(/^0{1,3}/, '')).join(':');
};

const TCP_LISTEN = '0A';

/** TCP sockets in LISTEN and every bound UDP socket held by `pids`. */
export const boundSockets = async (pids: number[]): Promise<BoundSocket[]> => {
  const owner = new Map<string, number>();
  for (const pid of pids) for (const inode of await socketInodes(pid)) owner.set(inode, pid);
  const sockets: BoundSocket[] = [];
  for (const protocol of ['tcp', 'tcp6', 'udp', 'udp6'] as const) {
    let table: string;
    try {
      table = await readFile(`/proc/net/${protocol}`, 'utf8');
    } catch {
      continue;
    }
    for (const line of table.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      // sl, local_address, rem_address, st, tx_queue:rx_queue, tr:tm->when, retrnsmt, uid, timeout, inode
      const [, local, , state, , , , , , inode] = fields;
      if (!local || !state || !inode) continue;
      const pid = owner.get(inode);
      if (pid === undefined) continue;
      if (protocol.startsWith('tcp') && state !== TCP_LISTEN) continue;
      const [addressHex = '', portHex = '0'] = local.split(':');
      sockets.push({ protocol, address: decodeAddress(addressHex), port: parseInt(portHex, 16), pid });
    }
  }
  return sockets;
};
