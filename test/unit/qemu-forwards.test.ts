import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { forwardRules, GUEST_CONDUCTOR_PORT, GUEST_HTTP_PORT } from '../support/qemu.js';

describe('forwardRules: the ways between the VM and the host', () => {
  it('forwards the boot server and the conductor, then the extra relays and host ports', () => {
    assert.deepEqual(
      forwardRules({
        bootPort: 40_001,
        conductorPort: 40_002,
        guestForwards: [{ guestPort: 6385, hostPort: 40_003 }],
        hostForwards: [{ hostPort: 40_004, guestPort: 9999 }],
      }),
      {
        guest: [
          { guestPort: GUEST_HTTP_PORT, hostPort: 40_001 },
          { guestPort: GUEST_CONDUCTOR_PORT, hostPort: 40_002 },
          { guestPort: 6385, hostPort: 40_003 },
        ],
        host: [{ hostPort: 40_004, guestPort: 9999 }],
      },
    );
  });

  it('leaves 8080 free without a conductor', () => {
    const rules = forwardRules({
      bootPort: 40_001,
      conductorPort: null,
      guestForwards: [{ guestPort: GUEST_CONDUCTOR_PORT, hostPort: 40_005 }],
    });
    assert.deepEqual(rules.guest, [
      { guestPort: GUEST_HTTP_PORT, hostPort: 40_001 },
      { guestPort: GUEST_CONDUCTOR_PORT, hostPort: 40_005 },
    ]);
    assert.deepEqual(rules.host, []);
  });

  it('refuses a guest port that is already forwarded', () => {
    assert.throws(
      () =>
        forwardRules({
          bootPort: 40_001,
          conductorPort: 40_002,
          guestForwards: [{ guestPort: GUEST_CONDUCTOR_PORT, hostPort: 40_003 }],
        }),
      /guest port 8080 on 10\.0\.2\.100 is already forwarded/,
    );
    assert.throws(
      () =>
        forwardRules({
          bootPort: 40_001,
          conductorPort: null,
          guestForwards: [{ guestPort: GUEST_HTTP_PORT, hostPort: 40_003 }],
        }),
      /guest port 80 on 10\.0\.2\.100 is already forwarded/,
    );
  });

  it('refuses a host port forwarded twice', () => {
    assert.throws(
      () =>
        forwardRules({
          bootPort: 40_001,
          conductorPort: null,
          hostForwards: [
            { hostPort: 40_004, guestPort: 9999 },
            { hostPort: 40_004, guestPort: 22 },
          ],
        }),
      /host port 127\.0\.0\.1:40004 is already forwarded into the guest/,
    );
  });

  it('refuses what is not a port, saying which one', () => {
    const cases: Array<[Parameters<typeof forwardRules>[0], RegExp]> = [
      [{ bootPort: 0, conductorPort: null }, /the boot server port .* got 0/],
      [{ bootPort: 1, conductorPort: 65_536 }, /the conductor port .* got 65536/],
      [
        { bootPort: 1, conductorPort: null, guestForwards: [{ guestPort: 1.5, hostPort: 2 }] },
        /guestForwards\.guestPort .* got 1\.5/,
      ],
      [
        { bootPort: 1, conductorPort: null, guestForwards: [{ guestPort: 2, hostPort: -1 }] },
        /guestForwards\.hostPort .* got -1/,
      ],
      [
        { bootPort: 1, conductorPort: null, hostForwards: [{ hostPort: Number.NaN, guestPort: 2 }] },
        /hostForwards\.hostPort .* got NaN/,
      ],
      [
        { bootPort: 1, conductorPort: null, hostForwards: [{ hostPort: 2, guestPort: 70_000 }] },
        /hostForwards\.guestPort .* got 70000/,
      ],
    ];
    for (const [options, message] of cases) assert.throws(() => forwardRules(options), message);
  });
});
