/**
 * What the PXE ramdisk is made of, against its 50 MB budget: reads build/ramdisk/initramfs.img (any
 * compression the build offers), takes the archive apart and sums each part's files (node, its
 * libraries, the agent bundle, the kernel modules, busybox, each tool group with the libraries
 * only it needs), as build/ramdisk/contents.tsv assigns them.
 *
 * A part's compressed size cannot be read off the image (one stream holds everything), so each
 * part is compressed alone with the image's compressor at a fast level and the figures are scaled
 * so that they add up to the image's real size: a share of the real bytes, not an exact count.
 *
 * Prints figures only; build first (`make ramdisk`), then
 * `node dist/bench/ramdisk-size.js [--dir build/ramdisk]`.
 */
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { textArgument } from './common.js';

const TARGET_BYTES = 50 * 1000 * 1000;
const DIR = path.resolve(textArgument('dir', 'build/ramdisk'));

type Compressor = 'lz4' | 'zstd' | 'gzip' | 'xz' | 'none';

/** The program that reads each format, and a fast level of it for the per-part estimates. */
const TOOLS: Record<Exclude<Compressor, 'none'>, { decompress: string[]; estimate: string[] }> = {
  lz4: { decompress: ['lz4', '-dc'], estimate: ['lz4', '-l', '-1', '-c'] },
  zstd: { decompress: ['zstd', '-dc'], estimate: ['zstd', '-3', '-T0', '-c'] },
  gzip: { decompress: ['gzip', '-dc'], estimate: ['gzip', '-1', '-c'] },
  xz: { decompress: ['xz', '-dc'], estimate: ['xz', '-0', '-T0', '-c'] },
};

const detect = (head: Buffer): Compressor => {
  if (head.readUInt32LE(0) === 0x184c2102) return 'lz4';
  if (head.readUInt32LE(0) === 0xfd2fb528) return 'zstd';
  if (head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return 'xz';
  if (head.subarray(0, 6).toString('latin1') === '070701') return 'none';
  throw new Error('initramfs.img is neither a newc cpio nor lz4, zstd, gzip or xz');
};

/** Runs argv with `input` on stdin; resolves with everything it wrote to stdout. */
const pipeThrough = (argv: string[], input: Buffer): Promise<Buffer> =>
  new Promise((resolve, reject) => {
    const [file = '', ...args] = argv;
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'inherit'] });
    const chunks: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => chunks.push(chunk));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0
        ? resolve(Buffer.concat(chunks))
        : reject(new Error(`${argv.join(' ')} exited with ${code}`)),
    );
    // A compressor that exits early closes its stdin; the close handler reports it.
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
  });

/** Only the byte count of the output, so a part's compressed copy is never held whole. */
const compressedSize = (argv: string[], input: Buffer): Promise<number> =>
  new Promise((resolve, reject) => {
    const [file = '', ...args] = argv;
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'inherit'] });
    let bytes = 0;
    child.stdout.on('data', (chunk: Buffer) => (bytes += chunk.length));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolve(bytes) : reject(new Error(`${argv.join(' ')} exited with ${code}`)),
    );
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
  });

interface Entry {
  name: string;
  data: Buffer;
}

/** The files of a newc ("070701") archive; directories, links and devices carry no data. */
const readCpio = (archive: Buffer): Entry[] => {
  const entries: Entry[] = [];
  const align = (n: number) => (n + 3) & ~3;
  let offset = 0;
  while (offset + 110 <= archive.length) {
    const magic = archive.toString('latin1', offset, offset + 6);
    if (magic !== '070701') throw new Error(`not a newc header at byte ${offset}`);
    const field = (index: number) =>
      parseInt(archive.toString('latin1', offset + 6 + index * 8, offset + 14 + index * 8), 16);
    const mode = field(1);
    const fileSize = field(6);
    const nameSize = field(11);
    const name = archive.toString('utf8', offset + 110, offset + 110 + nameSize - 1);
    const dataStart = align(offset + 110 + nameSize);
    if (name === 'TRAILER!!!') break;
    // S_IFREG: only regular files count; a symlink's "data" is its target's name.
    if ((mode & 0o170000) === 0o100000)
      entries.push({ name, data: archive.subarray(dataStart, dataStart + fileSize) });
    offset = align(dataStart + fileSize);
  }
  return entries;
};

const mb = (bytes: number) => (bytes / 1e6).toFixed(2);
const pct = (part: number, whole: number) => `${((100 * part) / whole).toFixed(1)} %`;

const main = async () => {
  const image = await readFile(path.join(DIR, 'initramfs.img'));
  const groups = new Map<string, string>();
  for (const line of (await readFile(path.join(DIR, 'contents.tsv'), 'utf8')).split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const [file = '', group = ''] = line.split('\t');
    groups.set(file, group);
  }
  const manifest = JSON.parse(await readFile(path.join(DIR, 'manifest.json'), 'utf8')) as {
    kernel?: { release?: string };
    node?: { version?: string };
    nvidia?: { rshim?: { included?: boolean }; mft?: { included?: boolean } };
  };

  const compressor = detect(image);
  const archive = compressor === 'none' ? image : await pipeThrough(TOOLS[compressor].decompress, image);
  const parts = new Map<string, { files: number; bytes: number; data: Buffer[] }>();
  for (const entry of readCpio(archive)) {
    const group = groups.get(`/${entry.name}`) ?? 'other';
    const part = parts.get(group) ?? { files: 0, bytes: 0, data: [] };
    part.files += 1;
    part.bytes += entry.data.length;
    part.data.push(entry.data);
    parts.set(group, part);
  }

  // The parts the question is about first, then the tool groups by size.
  const FIRST = ['node', 'libs', 'agent', 'kernel-modules', 'busybox', 'init'];
  const names = [...parts.keys()].sort((a, b) => {
    const ia = FIRST.indexOf(a);
    const ib = FIRST.indexOf(b);
    if (ia >= 0 || ib >= 0) return (ia < 0 ? FIRST.length : ia) - (ib < 0 ? FIRST.length : ib);
    return (parts.get(b)?.bytes ?? 0) - (parts.get(a)?.bytes ?? 0);
  });
  const estimates = new Map<string, number>();
  for (const name of names) {
    const part = parts.get(name);
    if (!part) continue;
    estimates.set(
      name,
      compressor === 'none'
        ? part.bytes
        : await compressedSize(TOOLS[compressor].estimate, Buffer.concat(part.data)),
    );
  }
  const estimateTotal = [...estimates.values()].reduce((a, b) => a + b, 0);
  const scale = estimateTotal > 0 ? image.length / estimateTotal : 1;
  const fileBytes = [...parts.values()].reduce((a, b) => a + b.bytes, 0);

  console.log(`initramfs.img in ${DIR}`);
  console.log(
    `compression ${compressor}; kernel ${manifest.kernel?.release ?? '?'}; node ${manifest.node?.version ?? '?'}; ` +
      `rshim ${manifest.nvidia?.rshim?.included ? 'in' : 'not in'}; MFT ${manifest.nvidia?.mft?.included ? 'in' : 'not in'}`,
  );
  console.log('');
  const header = ['part', 'files', 'MB', 'share', `MB ${compressor} (est.)`, 'share'];
  const rows = names.map((name) => {
    const part = parts.get(name) ?? { files: 0, bytes: 0 };
    const compressed = (estimates.get(name) ?? 0) * scale;
    return [
      name,
      String(part.files),
      mb(part.bytes),
      pct(part.bytes, fileBytes),
      mb(compressed),
      pct(compressed, image.length),
    ];
  });
  rows.push([
    'total',
    String(rows.reduce((a, r) => a + Number(r[1]), 0)),
    mb(fileBytes),
    '100 %',
    mb(image.length),
    '100 %',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const show = (row: string[]) =>
    console.log(
      row
        .map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0)))
        .join('  '),
    );
  show(header);
  show(widths.map((w) => '-'.repeat(w)));
  rows.forEach((row, i) => {
    if (i === rows.length - 1) show(widths.map((w) => '-'.repeat(w)));
    show(row);
  });
  console.log('');
  console.log(
    `archive (cpio) ${mb(archive.length)} MB; compressed ${mb(image.length)} MB (${pct(image.length, archive.length)})`,
  );
  const margin = TARGET_BYTES - image.length;
  console.log(
    `target: under ${mb(TARGET_BYTES)} MB compressed: ${margin > 0 ? 'met' : 'MISSED'}, ` +
      `${mb(Math.abs(margin))} MB ${margin > 0 ? 'to spare' : 'over'}`,
  );
};

await main();
