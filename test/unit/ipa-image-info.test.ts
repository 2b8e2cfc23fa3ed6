import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { planImageWrite } from '../../agent/ipa/image-info.js';
import { rootDeviceHintsOf } from '../../agent/ipa/node.js';
import { AgentError } from '../../agent/util/errors.js';

const SHA256 = '4e29ad18ab9f42d7c233500771a39d7c852b200baf328fd00fbbe3fecea1eb56';
const MD5 = 'e6065c4aa2ab1603008fc18410f579d4';

/** What Zed Ironic sent for a direct deploy (ironic-protocol.md §2.1). */
const imageInfo = (overrides: Record<string, unknown> = {}): Record<string, unknown> => ({
  id: 'disk.img',
  urls: ['http://127.0.0.1:8080/disk.img'],
  disk_format: 'raw',
  container_format: null,
  stream_raw_images: true,
  checksum: MD5,
  os_hash_algo: 'sha256',
  os_hash_value: SHA256,
  node_uuid: '3e6bb5f3-c76b-45bd-a88d-d9a950bbe2ea',
  ...overrides,
});

const args = (info: Record<string, unknown> = imageInfo(), configdrive: unknown = null) => ({
  image_info: info,
  configdrive,
});

const invalid = (pattern: RegExp) => (error: unknown) => {
  assert.ok(AgentError.is(error), `expected an AgentError, got ${String(error)}`);
  assert.equal(error.code, 'INVALID_PARAMS');
  assert.match(error.message, pattern);
  return true;
};

describe('write_image args to image.write params', () => {
  it("maps Ironic's image_info: first URL, os_hash over md5, raw, no hints", () => {
    const plan = planImageWrite(args(), { uuid: 'n', properties: {}, instance_info: {} });
    assert.equal(plan.imageId, 'disk.img');
    assert.equal(plan.hintsSource, null);
    assert.deepEqual(plan.attempts, [
      {
        url: 'http://127.0.0.1:8080/disk.img',
        checksum: { os_hash_algo: 'sha256', os_hash_value: SHA256 },
        disk_format: 'raw',
      },
    ]);
  });

  it('makes one attempt per URL, in order, with the same checksum and hints', () => {
    const plan = planImageWrite(
      args(imageInfo({ urls: ['https://a.example/x.img', 'http://b.example/x.img'] })),
      { properties: { root_device: { serial: 'S1' } } },
    );
    assert.deepEqual(
      plan.attempts.map((attempt) => attempt.url),
      ['https://a.example/x.img', 'http://b.example/x.img'],
    );
    assert.ok(
      plan.attempts.every((attempt) => (attempt.root_device_hints as { serial: string }).serial === 'S1'),
    );
  });

  it('uses the legacy checksum as given when there is no os_hash, or its algorithm is not computable', () => {
    const legacy = planImageWrite(args(imageInfo({ os_hash_algo: null, os_hash_value: null })), null);
    assert.equal(legacy.attempts[0]?.checksum, MD5);
    const fallback = planImageWrite(args(imageInfo({ os_hash_algo: 'sha384', os_hash_value: 'ab' })), null);
    assert.equal(fallback.attempts[0]?.checksum, MD5);
    const url = planImageWrite(
      args(imageInfo({ checksum: 'http://h/SHA256SUMS', os_hash_algo: undefined, os_hash_value: undefined })),
      null,
    );
    assert.equal(url.attempts[0]?.checksum, 'http://h/SHA256SUMS');
  });

  it('normalises the os_hash algorithm name and keeps a checksums-file URL as the value', () => {
    const plan = planImageWrite(
      args(imageInfo({ checksum: undefined, os_hash_algo: 'SHA-512', os_hash_value: 'https://h/SUMS' })),
      null,
    );
    assert.deepEqual(plan.attempts[0]?.checksum, { os_hash_algo: 'sha512', os_hash_value: 'https://h/SUMS' });
  });

  it('refuses an image without any checksum, an empty one, or half an os_hash pair', () => {
    assert.throws(
      () =>
        planImageWrite(args(imageInfo({ checksum: null, os_hash_algo: null, os_hash_value: null })), null),
      invalid(/has no checksum/),
    );
    assert.throws(
      () => planImageWrite(args(imageInfo({ checksum: '  ' })), null),
      invalid(/checksum is empty/),
    );
    assert.throws(
      () => planImageWrite(args(imageInfo({ os_hash_value: '' })), null),
      invalid(/os_hash_algo and os_hash_value come together/),
    );
    assert.throws(
      () =>
        planImageWrite(
          args(imageInfo({ checksum: null, os_hash_algo: 'sha384', os_hash_value: 'ab' })),
          null,
        ),
      invalid(/os_hash_algo "sha384" is not supported/),
    );
  });

  it('maps disk formats: raw, qcow2, iso (written raw), unset detects; others are refused', () => {
    const format = (value: unknown) =>
      planImageWrite(args(imageInfo({ disk_format: value })), null).attempts[0]?.disk_format;
    assert.equal(format('raw'), 'raw');
    assert.equal(format('qcow2'), 'qcow2');
    assert.equal(format('QCOW2'), 'qcow2');
    assert.equal(format('iso'), 'raw');
    assert.equal(format(null), 'auto');
    assert.equal(format(undefined), 'auto');
    assert.throws(() => format('vmdk'), invalid(/disk_format "vmdk" cannot be written/));
  });

  it('refuses a config drive, in the step args or in image_info', () => {
    assert.throws(
      () => planImageWrite(args(imageInfo(), 'H4sIAAAA'), null),
      invalid(/config drive is not supported/),
    );
    assert.throws(
      () => planImageWrite(args(imageInfo({ configdrive: { meta_data: {} } })), null),
      invalid(/config drive is not supported/),
    );
    assert.equal(planImageWrite(args(imageInfo(), ''), null).attempts.length, 1);
  });

  it('refuses partition images, proxies and image server authentication', () => {
    assert.throws(
      () => planImageWrite(args(imageInfo({ image_type: 'partition' })), null),
      invalid(/partition images are not supported/),
    );
    assert.throws(
      () => planImageWrite(args(imageInfo({ kernel: 'http://h/k', root_mb: 1024 })), null),
      invalid(/partition images are not supported/),
    );
    assert.throws(
      () => planImageWrite(args(imageInfo({ proxies: { http: 'http://proxy:3128', https: null } })), null),
      invalid(/proxies \(http\) are not supported/),
    );
    assert.equal(
      planImageWrite(args(imageInfo({ proxies: { http: '' }, no_proxy: 'x' })), null).attempts.length,
      1,
    );
    assert.throws(
      () => planImageWrite(args(imageInfo({ image_server_auth_strategy: 'http_basic' })), null),
      invalid(/authentication \(http_basic\) is not supported/),
    );
  });

  it('refuses malformed shapes, naming the field', () => {
    assert.throws(() => planImageWrite({}, null), invalid(/step\.args\.image_info/));
    assert.throws(() => planImageWrite({ ...args(), extra: 1 }, null), invalid(/step\.args/));
    assert.throws(() => planImageWrite(args(imageInfo({ urls: [] })), null), invalid(/urls/));
    assert.throws(() => planImageWrite(args(imageInfo({ urls: 'http://h/x' })), null), invalid(/urls/));
    assert.throws(() => planImageWrite(args(imageInfo({ id: '' })), null), invalid(/\.id/));
    assert.throws(() => planImageWrite(args(imageInfo({ checksum: 5 })), null), invalid(/checksum/));
    assert.throws(
      () => planImageWrite(args(imageInfo({ urls: ['http://h/x', 'file:///etc/passwd'] })), null),
      invalid(/urls\[1\] "file:\/\/\/etc\/passwd" is not an http or https URL/),
    );
  });
});

describe('root device hints from the node', () => {
  it('prefers instance_info.root_device over properties.root_device, as IPA does', () => {
    const node = {
      instance_info: { root_device: { name: '/dev/sdb' } },
      properties: { root_device: { size: 100 } },
    };
    assert.deepEqual(rootDeviceHintsOf(node), {
      hints: { name: '/dev/sdb' },
      source: 'node.instance_info.root_device',
    });
  });

  it('falls back to properties when instance_info has none or empty hints', () => {
    for (const instanceInfo of [{}, { root_device: {} }, { root_device: null }, null]) {
      const node = {
        instance_info: instanceInfo,
        properties: { root_device: { size: '>= 100', rotational: false } },
      };
      assert.deepEqual(rootDeviceHintsOf(node), {
        hints: { size: '>= 100', rotational: false },
        source: 'node.properties.root_device',
      });
    }
    assert.equal(rootDeviceHintsOf({ properties: { cpu_arch: 'x86_64' } }), null);
    assert.equal(rootDeviceHintsOf(null), null);
  });

  it('refuses hints that are not an object of scalars', () => {
    assert.throws(
      () => rootDeviceHintsOf({ properties: { root_device: 'sda' } }),
      invalid(/node\.properties\.root_device/),
    );
    assert.throws(
      () => rootDeviceHintsOf({ properties: { root_device: { serial: ['a'] } } }),
      invalid(/node\.properties\.root_device\.serial/),
    );
  });

  it('pass into every image.write attempt', () => {
    const plan = planImageWrite(args(), { properties: { root_device: { wwn: '0x5000' } } });
    assert.deepEqual(plan.attempts[0]?.root_device_hints, { wwn: '0x5000' });
    assert.equal(plan.hintsSource, 'node.properties.root_device');
  });
});
