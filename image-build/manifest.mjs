/* global process */
// Writes manifest.json and contents.tsv for build.sh, which passes what it knows through the
// environment and files in $WORK. Nothing here may depend on when or where the build ran (the
// manifest is compared byte for byte between builds): the only date is SOURCE_DATE_EPOCH's.
import { createHash } from 'node:crypto';
import { lstatSync, readdirSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const env = process.env;
const work = env.WORK;
const lines = (file) =>
  readFileSync(path.join(work, file), 'utf8')
    .split('\n')
    .filter((line) => line !== '');
const sha256 = (file) => createHash('sha256').update(readFileSync(file)).digest('hex');
const artefact = (file) => ({ bytes: lstatSync(file).size, sha256: sha256(file) });

// The package each file of the merged tree came from.
const owner = new Map();
const listDir = path.join(env.SYS, '.lists');
for (const name of readdirSync(listDir).sort()) {
  for (const file of readFileSync(path.join(listDir, name), 'utf8').split('\n')) {
    if (file !== '' && !owner.has(file)) owner.set(file, name);
  }
}
const versions = new Map(
  lines('packages.txt').map((line) => {
    const [name, version, architecture] = line.split(' ');
    return [name, { version, architecture }];
  }),
);

// A library belongs to the one group whose programs need it; one that several groups need is
// counted once, in "libs", with node's own (the figures answer "what does dropping X save").
const users = new Map();
const addUser = (file, group) => {
  const set = users.get(file) ?? new Set();
  set.add(group);
  users.set(file, set);
};
for (const line of lines('lib-users.tsv')) {
  const [group, file] = line.split('\t');
  addUser(file, group);
  const target = '/' + path.relative(env.ROOT, realpathSync(path.join(env.ROOT, file)));
  if (target !== file) addUser(target, group);
}

// Groups whose files are not Debian's even when a package lists the same path.
const NOT_DEBIAN = new Set([
  'node',
  'agent',
  'init',
  'operator',
  'overlay',
  'rshim',
  'mft',
  'kernel-modules',
]);
const contents = [];
const parts = new Map();
const used = new Set();
for (const line of lines('contents.unsorted')) {
  const [listed, file] = line.split('\t');
  const group = (users.get(file)?.size ?? 0) > 1 ? 'libs' : listed;
  const stat = lstatSync(path.join(env.ROOT, file));
  const bytes = stat.isFile() ? stat.size : 0;
  const pkg = NOT_DEBIAN.has(group) ? null : (owner.get(file) ?? null);
  if (pkg !== null) used.add(pkg);
  contents.push({ file, group, bytes, pkg });
  const part = parts.get(group) ?? { files: 0, bytes: 0 };
  part.files += 1;
  part.bytes += bytes;
  parts.set(group, part);
}
contents.sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0));
writeFileSync(
  path.join(env.STAGE, 'contents.tsv'),
  '# path\tgroup\tbytes\tDebian package\n' +
    contents.map((c) => `${c.file}\t${c.group}\t${c.bytes}\t${c.pkg ?? '-'}\n`).join(''),
);

const nvidia = (file, version) =>
  file
    ? { included: true, file: path.basename(file), version: version || null, sha256: sha256(file) }
    : { included: false };
const optional = (file) => (file ? lines(file) : []);
const git = (value) => (value === '' ? null : value);

const stage = (name) => path.join(env.STAGE, name);
const manifest = {
  name: 'bm-agent ramdisk',
  agent_version: env.AGENT_VERSION,
  build_date: env.build_date,
  source_date_epoch: Number(env.SOURCE_DATE_EPOCH),
  source: { git_commit: git(env.GIT_COMMIT ?? ''), git_dirty: env.GIT_DIRTY === '1' },
  kernel: { package: env.KERNEL_PACKAGE, version: env.KERNEL_VERSION, release: env.KREL },
  node: {
    version: env.NODE_VERSION,
    binary: env.NODE_BIN,
    package: env.NODE_PACKAGE || null,
    package_version: env.NODE_PACKAGE_VERSION || null,
    sha256: env.node_sha,
    stripped: true,
  },
  // Whether the agent starts from V8's code cache (false: the build could not make one).
  agent_code_cache: env.CODE_CACHE === '1',
  compression: { format: env.COMP, level: Number(env.COMP_LEVEL) },
  kernel_arguments: lines('kernel-args'),
  debian_packages: [...used].sort().map((name) => ({ name, ...versions.get(name) })),
  nvidia: {
    rshim: nvidia(env.RSHIM_DEB, env.RSHIM_VERSION),
    mft: nvidia(env.MFT_TGZ, env.MFT_VERSION),
  },
  python: env.PYTHON === '1',
  ca_bundle: env.CA_BUNDLE ? { included: true, sha256: sha256(env.CA_BUNDLE) } : { included: false },
  overlay_files: Number(env.overlay_files),
  kernel_modules: {
    wanted: lines('modules.wanted'),
    loaded_at_boot: lines('modules.boot'),
    not_in_kernel: optional('modules.missing'),
    files: contents.filter((c) => c.group === 'kernel-modules' && c.file.endsWith('.ko')).length,
  },
  parts: Object.fromEntries([...parts].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))),
  initramfs_uncompressed_bytes: lstatSync(path.join(work, 'initramfs.cpio')).size,
  size_target_bytes: Number(env.SIZE_TARGET),
  artefacts: {
    vmlinuz: artefact(stage('vmlinuz')),
    vmlinux: artefact(stage('vmlinux')),
    'initramfs.img': artefact(stage('initramfs.img')),
    'boot.ipxe': artefact(stage('boot.ipxe')),
    'contents.tsv': artefact(stage('contents.tsv')),
  },
};
writeFileSync(stage('manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
