import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, before, describe, it } from 'node:test';
import { composeBfCfg, CONDUCTOR_HOOK_NAME, mergeBfCfg } from '../../agent/hardware/bluefield/bfb/bf-cfg.js';
import { bfbImageName } from '../../agent/hardware/bluefield/bfb/format.js';
import { bfbVersionFromInfo } from '../../agent/hardware/bluefield/bfb/info.js';
import {
  BfbValidatingStream,
  BfbValidator,
  validateBfbFile,
} from '../../agent/hardware/bluefield/bfb/validator.js';
import type { BfbSummary } from '../../agent/hardware/bluefield/contracts.js';
import { findOnPath } from '../../agent/util/run-process.js';
import { assertCode, rejectsWithCode } from '../support/agent-errors.js';
import { BFB_IMAGE_IDS, bfbInfo, buildBfb, sampleBfb, writeLargeBfb } from '../support/bfb-builder.js';

const VERSION = 'bf-bundle-2.9.2-31_25.02_ubuntu-22.04_prod';
const KEY =
  'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ7nS0mYQxW6a1zYh0f3H2d0b6cT3m2lqJYk7v1x9p0F bm-agent@ramdisk';

const validate = (bytes: Buffer, chunk = bytes.length || 1): BfbSummary => {
  const validator = new BfbValidator();
  for (let i = 0; i < bytes.length; i += chunk) validator.push(bytes.subarray(i, i + chunk));
  return validator.end();
};

const invalid = (bytes: Buffer, message: RegExp, chunk?: number): void => {
  let caught: unknown;
  try {
    validate(bytes, chunk);
  } catch (error) {
    caught = error;
  }
  const error = assertCode(caught, 'BFB_INVALID', message);
  assert.match(error.message, /offset \d+/, 'the message names the offset');
};

// The sample's layout: bl2 (26 bytes) at 0, info at 56, image (64 KiB) at 296, initramfs at 65856.
const IMAGE_AT = 296;
const INITRAMFS_AT = 65856;

describe('BFB validator', () => {
  const good = sampleBfb(VERSION);

  it('walks every image of a well-formed BFB and reads its version', () => {
    const summary = validate(good);
    assert.equal(summary.bytes, good.length);
    assert.equal(summary.version, VERSION);
    assert.deepEqual(
      summary.images.map(({ id, name, offset, length }) => ({ id, name, offset, length })),
      [
        { id: 1, name: 'bl2', offset: 0, length: 26 },
        { id: 50, name: 'info', offset: 56, length: bfbInfo(VERSION).length },
        { id: 62, name: 'image', offset: IMAGE_AT, length: 64 * 1024 },
        { id: 63, name: 'initramfs', offset: INITRAMFS_AT, length: 32 * 1024 + 3 },
      ],
    );
  });

  it('gives the same answer whatever the chunking', () => {
    const whole = validate(good);
    for (const chunk of [1, 5, 23, 24, 25, 4096, 65537])
      assert.deepEqual(validate(good, chunk), whole, `chunk ${chunk}`);
  });

  it('has no version when there is no info image, or its JSON declares none', () => {
    const noInfo = buildBfb([{ id: BFB_IMAGE_IDS.bl2, data: Buffer.from('bl2') }]);
    assert.equal(validate(noInfo).version, null);
    const notJson = buildBfb([{ id: BFB_IMAGE_IDS.info, data: Buffer.from('not json {') }]);
    assert.equal(validate(notJson).version, null);
    const empty = buildBfb([{ id: BFB_IMAGE_IDS.info, data: Buffer.from('{"Name":"x"}') }]);
    assert.equal(validate(empty).version, null);
  });

  it('falls back to a bundle name among the info values when Version is missing', () => {
    const info = Buffer.from(
      JSON.stringify({
        Name: 'BFB',
        Members: [{ Name: 'BF_ATF', Version: '4.9.0' }, { Image: 'bf-fwbundle-3.2.0-113_25.10-prod' }],
      }),
    );
    assert.equal(bfbVersionFromInfo(info), 'bf-fwbundle-3.2.0-113_25.10-prod');
    assert.equal(bfbVersionFromInfo(Buffer.from('{"Version":"  4.13.0-1234  "}\0\0')), '4.13.0-1234');
    assert.equal(
      bfbVersionFromInfo(Buffer.from('{"Version":12,"x":"bf-bundle-3.0.0-1"}')),
      'bf-bundle-3.0.0-1',
    );
    assert.equal(bfbVersionFromInfo(Buffer.from('["bf-bundle-3.0.0-1"]')), null);
  });

  it('names images from the mlx-mkbfb table and unknown IDs by number', () => {
    assert.equal(bfbImageName(41), 'nicfw');
    assert.equal(bfbImageName(59), 'boot-args');
    assert.equal(bfbImageName(11), 'bl33-key-cert');
    assert.equal(bfbImageName(20), 'id-20');
    const odd = buildBfb([{ id: 20, data: Buffer.alloc(0) }]);
    assert.deepEqual(validate(odd).images[0], { id: 20, name: 'id-20', offset: 0, length: 0, crc32: 0 });
  });

  describe('refuses', () => {
    it('an empty file', () => invalid(Buffer.alloc(0), /empty/));

    it('an HTML error page, long or short', () => {
      const page = Buffer.from('<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head></html>\n');
      invalid(page, /HTML page.*404|HTML page.*DOCTYPE/);
      invalid(Buffer.from('<html>502</html>'), /HTML page/);
    });

    it('gzip data and other bytes at offset 0', () => {
      invalid(Buffer.concat([Buffer.from([0x1f, 0x8b, 0x08, 0]), Buffer.alloc(40)]), /gzip/);
      invalid(Buffer.alloc(64, 0xff), /bytes ff ff/);
    });

    it('a file cut inside a header', () => {
      invalid(
        good.subarray(0, 10),
        /truncated.*inside an image header that starts at offset 0 \(10 of 24 bytes\)/,
      );
      invalid(
        good.subarray(0, IMAGE_AT + 5),
        new RegExp(`inside an image header that starts at offset ${IMAGE_AT}`),
      );
    });

    it('a file cut inside an image', () => {
      invalid(
        good.subarray(0, IMAGE_AT + 24 + 1000),
        new RegExp(
          `truncated: the file ends at offset ${IMAGE_AT + 1024} inside image image \\(ID 62, header at offset ${IMAGE_AT}\\), 1000 of its 65536`,
        ),
        4096,
      );
      // The padding after the data counts too: a file missing only its last padding byte is cut.
      invalid(good.subarray(0, good.length - 1), /inside image initramfs/);
    });

    it('a CRC mismatch in the header, the data or the padding', () => {
      const wrongCrc = buildBfb([
        { id: BFB_IMAGE_IDS.bl2, data: Buffer.from('bl2') },
        { id: BFB_IMAGE_IDS.image, data: Buffer.alloc(100, 1), crc32: 0x12345678 },
      ]);
      invalid(
        wrongCrc,
        /CRC mismatch in image image \(ID 62\) whose header is at offset 32: the header says 0x12345678/,
      );
      const flipped = Buffer.from(good);
      flipped[IMAGE_AT + 24 + 500] = (flipped[IMAGE_AT + 24 + 500] ?? 0) ^ 0x40;
      invalid(flipped, new RegExp(`CRC mismatch in image image .* offset ${IMAGE_AT}`));
      const padding = Buffer.from(good);
      // initramfs is 32771 bytes: 5 bytes of padding end the file, and the CRC covers them.
      padding[good.length - 2] = 0x01;
      invalid(padding, new RegExp(`CRC mismatch in image initramfs .* offset ${INITRAMFS_AT}`));
    });

    it('trailing bytes after the last image', () => {
      invalid(
        Buffer.concat([good, Buffer.from('garbage after the BFB, several words long')]),
        new RegExp(
          `no image header at offset ${good.length}.*trailing bytes after the last image \\(initramfs, ID 63\\)`,
        ),
      );
      invalid(
        Buffer.concat([good, Buffer.alloc(512)]),
        new RegExp(`no image header at offset ${good.length}: found 00 00 00 00`),
      );
      invalid(
        Buffer.concat([good, Buffer.from('\n')]),
        new RegExp(`1 trailing byte at offset ${good.length} after the last image is not`),
      );
    });

    it('a bad magic, version or header length in a later header', () => {
      const image = (extra: object): Buffer =>
        buildBfb([
          { id: BFB_IMAGE_IDS.bl2, data: Buffer.from('bl2') },
          { id: BFB_IMAGE_IDS.image, data: Buffer.alloc(8), ...extra },
        ]);
      invalid(image({ magic: 0x13026643 }), /no image header at offset 32: found 43 66 02 13/);
      invalid(image({ major: 2 }), /unsupported BFB header version 2\.2 at offset 32/);
      invalid(image({ headerWords: 4 }), /bad header length at offset 32: 4 words/);
      const minor3 = Buffer.from(good);
      minor3[4] = 0x31;
      invalid(minor3, /unsupported BFB header version 1\.3 at offset 0/);
    });

    it('a length that runs past the end of the file', () => {
      invalid(
        buildBfb([{ id: BFB_IMAGE_IDS.image, data: Buffer.alloc(16), length: 4096 }]),
        /truncated.*inside image image.*16 of its 4096/,
      );
    });

    it('anything more once it has failed', () => {
      const validator = new BfbValidator();
      assert.throws(() => validator.push(Buffer.from('<html>this is not a BFB at all</html>')), /HTML/);
      assert.throws(() => validator.push(good), /HTML/);
      assert.throws(() => validator.end(), /HTML/);
    });
  });
});

describe('BFB validation on streams and files', () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'bma-bfb-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

  it('passes a download through unchanged while validating it', async () => {
    const good = sampleBfb(VERSION);
    const stage = new BfbValidatingStream();
    const out: Buffer[] = [];
    const pieces = [
      good.subarray(0, 7),
      good.subarray(7, 300),
      good.subarray(300, 70000),
      good.subarray(70000),
    ];
    await pipeline(
      Readable.from(pieces),
      stage,
      new Writable({
        write(chunk: Buffer, _encoding, callback) {
          out.push(chunk);
          callback();
        },
      }),
    );
    assert.equal(sha256(Buffer.concat(out)), sha256(good));
    assert.equal(stage.summary?.version, VERSION);
    assert.equal(stage.summary?.bytes, good.length);
  });

  it('fails the pipeline on a bad download, at the end when it is truncated', async () => {
    const good = sampleBfb(VERSION);
    const sink = (): Writable => new Writable({ write: (_c, _e, callback) => callback() });
    await rejectsWithCode(
      pipeline(
        Readable.from([Buffer.from('<!doctype html><title>500</title>')]),
        new BfbValidatingStream(),
        sink(),
      ),
      'BFB_INVALID',
      /HTML page/,
    );
    const stage = new BfbValidatingStream();
    await rejectsWithCode(
      pipeline(Readable.from([good.subarray(0, 5000)]), stage, sink()),
      'BFB_INVALID',
      /truncated/,
    );
    assert.equal(stage.summary, null);
  });

  it('validates a file larger than one read, with an unaligned last image', async () => {
    const file = path.join(dir, 'large.bfb');
    const bytes = 9 * 1024 * 1024 + 3;
    const size = await writeLargeBfb(file, bytes, 'bf-fwbundle-3.2.0-113_25.10-prod');
    assert.equal((await stat(file)).size, size);
    const summary = await validateBfbFile(file);
    assert.equal(summary.bytes, size);
    assert.equal(summary.version, 'bf-fwbundle-3.2.0-113_25.10-prod');
    assert.deepEqual(
      summary.images.map((image) => [image.name, image.length]),
      [
        ['bl2', 26],
        ['info', bfbInfo('bf-fwbundle-3.2.0-113_25.10-prod').length],
        ['image', bytes],
      ],
    );
    // One flipped byte past the first read still fails the file.
    const data = await readFile(file);
    data[6 * 1024 * 1024] = (data[6 * 1024 * 1024] ?? 0) ^ 1;
    await writeFile(file, data);
    await rejectsWithCode(validateBfbFile(file), 'BFB_INVALID', /CRC mismatch in image image/);
  });

  it('names a file it cannot read, and honours an abort', async () => {
    await rejectsWithCode(validateBfbFile(path.join(dir, 'missing.bfb')), 'INVALID_PARAMS', /missing\.bfb/);
    await rejectsWithCode(validateBfbFile(dir), 'INVALID_PARAMS', /EISDIR|directory/);
    const file = path.join(dir, 'small.bfb');
    await writeFile(file, sampleBfb());
    const controller = new AbortController();
    controller.abort();
    await rejectsWithCode(validateBfbFile(file, { signal: controller.signal }), 'CANCELLED');
  });
});

describe('bf.cfg', () => {
  it('is empty without a conductor text or a key, and the conductor text alone is unchanged', () => {
    assert.equal(composeBfCfg({ conductorCfg: null, agentPublicKey: null }), '');
    assert.equal(
      composeBfCfg({ conductorCfg: 'ubuntu_PASSWORD=x', agentPublicKey: null }),
      'ubuntu_PASSWORD=x\n',
    );
  });

  it('keeps the conductor text first and adds the hook after it', () => {
    const conductor = "ubuntu_PASSWORD='$1$abc'\nbfb_modify_os() {\n  touch /mnt/etc/conductor\n}\n";
    const text = composeBfCfg({ conductorCfg: conductor, agentPublicKey: KEY });
    assert.ok(text.startsWith(conductor));
    assert.match(text, new RegExp(CONDUCTOR_HOOK_NAME));
    assert.ok(text.includes(KEY));
  });

  it('refuses a key that is not one OpenSSH public key line', () => {
    for (const key of [
      `${KEY}\nssh-rsa AAAA second`,
      'not a key',
      'ssh-ed25519 !!!',
      'ssh-ed25519 AAAA\u0007x',
      '',
    ]) {
      assert.throws(
        () => composeBfCfg({ conductorCfg: null, agentPublicKey: key }),
        (error: unknown) => {
          assertCode(error, 'INVALID_PARAMS');
          return true;
        },
      );
    }
  });

  it('refuses bad bash syntax, with the line of the conductor text', async (t) => {
    if ((await findOnPath('bash')) === null) return t.skip('bash is not installed');
    await rejectsWithCode(
      mergeBfCfg({ conductorCfg: 'A=1\nif true; then\n  echo x\n', agentPublicKey: KEY }),
      'INVALID_PARAMS',
      /not valid bash: .*syntax error/,
    );
    await rejectsWithCode(
      mergeBfCfg({ conductorCfg: 'echo "unclosed\n', agentPublicKey: null }),
      'INVALID_PARAMS',
      /not valid bash/,
    );
    assert.match(await mergeBfCfg({ conductorCfg: 'A=1', agentPublicKey: KEY }), /bfb_modify_os/);
  });

  it('skips the syntax check where there is no bash', async () => {
    const empty = await mkdtemp(path.join(os.tmpdir(), 'bma-nobash-'));
    try {
      const text = await mergeBfCfg(
        { conductorCfg: 'if then', agentPublicKey: null },
        { env: { PATH: empty } },
      );
      assert.equal(text, 'if then\n');
    } finally {
      await rm(empty, { recursive: true, force: true });
    }
  });

  describe('run as the DPU installer runs it (bash, the target root on /mnt)', () => {
    let dir = '';
    let skip: string | false = false;
    before(async () => {
      dir = await mkdtemp(path.join(os.tmpdir(), 'bma-bfcfg-'));
      if (process.getuid?.() !== 0) skip = 'needs root for a private mount namespace';
      else if ((await findOnPath('unshare')) === null || (await findOnPath('bash')) === null)
        skip = 'needs unshare and bash';
      else {
        const probe = spawnSync('unshare', ['-m', 'sh', '-c', `mount --bind "${dir}" /mnt`], {
          encoding: 'utf8',
        });
        if (probe.status !== 0) skip = `unshare -m with a bind mount failed here: ${probe.stderr.trim()}`;
      }
    });
    after(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    /** Sources the cfg `times` times (the installer may source it more than once), then calls the hook. */
    const install = async (
      name: string,
      cfg: string,
      times = 1,
    ): Promise<{ root: string; status: number | null; stderr: string }> => {
      const root = path.join(dir, name);
      await mkdir(root, { recursive: true });
      const file = path.join(dir, `${name}.cfg`);
      await writeFile(file, cfg);
      const sources = Array.from({ length: times }, () => '. "$2"').join(' && ');
      const result = spawnSync(
        'unshare',
        ['-m', 'bash', '-c', `mount --bind "$1" /mnt && ${sources} && bfb_modify_os`, 'bash', root, file],
        { encoding: 'utf8' },
      );
      return { root, status: result.status, stderr: result.stderr };
    };

    it("runs the conductor's bfb_modify_os first, then adds the key", async (t) => {
      if (skip) return t.skip(skip);
      const conductor = [
        "ubuntu_PASSWORD='$1$salt$hash'",
        'bfb_modify_os()',
        '{',
        '  mkdir -p /mnt/etc && echo "from the conductor" > /mnt/etc/conductor-hook',
        '  [ ! -e /mnt/root/.ssh/authorized_keys ] && echo first > /mnt/etc/order',
        '}',
      ].join('\n');
      const cfg = await mergeBfCfg({ conductorCfg: conductor, agentPublicKey: KEY });
      const { root, status, stderr } = await install('both', cfg);
      assert.equal(status, 0, stderr);
      assert.equal(await readFile(path.join(root, 'etc/conductor-hook'), 'utf8'), 'from the conductor\n');
      assert.equal(await readFile(path.join(root, 'etc/order'), 'utf8'), 'first\n');
      assert.equal(await readFile(path.join(root, 'root/.ssh/authorized_keys'), 'utf8'), `${KEY}\n`);
      assert.equal((await stat(path.join(root, 'root/.ssh'))).mode & 0o777, 0o700);
      assert.equal((await stat(path.join(root, 'root/.ssh/authorized_keys'))).mode & 0o777, 0o600);
    });

    it('adds the key once when sourced twice, with or without a conductor hook', async (t) => {
      if (skip) return t.skip(skip);
      const withHook = await mergeBfCfg({
        conductorCfg: 'function bfb_modify_os { echo x >> /mnt/conductor-runs; }',
        agentPublicKey: KEY,
      });
      const twice = await install('twice', withHook, 2);
      assert.equal(twice.status, 0, twice.stderr);
      assert.equal(await readFile(path.join(twice.root, 'conductor-runs'), 'utf8'), 'x\n');
      assert.equal(await readFile(path.join(twice.root, 'root/.ssh/authorized_keys'), 'utf8'), `${KEY}\n`);
      const keyOnly = await install(
        'key-only',
        await mergeBfCfg({ conductorCfg: null, agentPublicKey: KEY }),
        2,
      );
      assert.equal(keyOnly.status, 0, keyOnly.stderr);
      assert.equal(await readFile(path.join(keyOnly.root, 'root/.ssh/authorized_keys'), 'utf8'), `${KEY}\n`);
    });

    it('keeps existing keys, and still adds its own when the conductor hook fails', async (t) => {
      if (skip) return t.skip(skip);
      const cfg = await mergeBfCfg({ conductorCfg: 'bfb_modify_os() { return 3; }', agentPublicKey: KEY });
      const root = path.join(dir, 'existing');
      await mkdir(path.join(root, 'root/.ssh'), { recursive: true });
      await writeFile(path.join(root, 'root/.ssh/authorized_keys'), 'ssh-rsa AAAAB3Nza operator');
      await chmod(path.join(root, 'root/.ssh/authorized_keys'), 0o644);
      const { status } = await install('existing', cfg);
      assert.equal(status, 3, "the conductor hook's status is returned");
      assert.equal(
        await readFile(path.join(root, 'root/.ssh/authorized_keys'), 'utf8'),
        `ssh-rsa AAAAB3Nza operator\n${KEY}\n`,
      );
    });

    it('quotes a key comment that holds shell characters', async (t) => {
      if (skip) return t.skip(skip);
      const odd = `${KEY.split(' ').slice(0, 2).join(' ')} it's $(touch /mnt/pwned) \`x\` "q"`;
      const { root, status, stderr } = await install(
        'quoted',
        await mergeBfCfg({ conductorCfg: null, agentPublicKey: odd }),
      );
      assert.equal(status, 0, stderr);
      assert.equal(await readFile(path.join(root, 'root/.ssh/authorized_keys'), 'utf8'), `${odd}\n`);
      await assert.rejects(stat(path.join(root, 'pwned')));
    });
  });
});
