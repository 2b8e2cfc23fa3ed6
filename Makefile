# bm-agent: build, lint, test and demo. `make test` is what CI runs.
SHELL := /bin/bash
NPM ?= npm
NODE ?= node

.PHONY: all deps build lint test test-unit test-integration demo demo-local bench clean format packages ramdisk

all: build

node_modules/.package-lock.json: package.json package-lock.json
	$(NPM) ci --no-audit --no-fund
	@touch $@

deps: node_modules/.package-lock.json

build: deps
	npx tsc -p tsconfig.json
	chmod +x dist/agent/main.js

lint: deps
	npx tsc -p tsconfig.json --noEmit
	npx eslint .
	npx prettier --check .

format: deps
	npx prettier --write .

# The lint, then every test (unit and integration) with node's own runner.
# Test files are named explicitly: handing node a directory would also run the support modules.
# The e2e boots follow when QEMU is installed (.ci/packages installs it).
test: lint build
	$(NODE) --test --test-concurrency=1 $$(find dist/test -name '*.test.js' -not -path 'dist/test/e2e/*' | sort)
	@if command -v qemu-system-x86_64 >/dev/null 2>&1; then $(MAKE) e2e; \
	else echo "make test: e2e skipped, qemu-system-x86_64 is not installed (.ci/packages installs it)"; fi

test-unit: build
	$(NODE) --test $$(find dist/test/unit -name '*.test.js' | sort)

test-integration: build
	$(NODE) --test --test-concurrency=1 $$(find dist/test/integration -name '*.test.js' | sort)

# The Debian packages the demos, the tests and the ramdisk build need (QEMU, iPXE, sshd,
# nftables...), when missing.
packages:
	.ci/packages --no-ironic

# The ramdisk PXE-booted in a QEMU VM (no KVM needed), seen from the reference conductor as it
# happens: iPXE's fetches, the hello, the inventory with an LLDP neighbour, image.write with a
# progress bar, the power-off; then the timings and where the artefacts are (build/demo/).
demo: packages build ramdisk
	$(NODE) dist/test/support/pxe-demo.js

# A reference conductor and a real agent on this machine, no VM: hello, heartbeats and an
# inventory.collect round-trip with progress, then the simulated BlueField host; ends by itself.
demo-local: packages build
	$(NODE) dist/test/support/demo.js

# Each prints its figures next to the plain tools measured in the same run (see bench/README.md).
bench: build
	$(NODE) dist/bench/inventory.js
	$(NODE) dist/bench/lldp.js
	$(NODE) dist/bench/agent-rss.js
	$(NODE) dist/bench/fleet-reconnect.js
	$(NODE) dist/bench/bfb-push.js
	$(NODE) dist/bench/ramdisk-size.js
	$(NODE) dist/bench/ironic-deploy.js

# The PXE ramdisk in build/ramdisk/: kernel, initramfs, iPXE script and manifest, from Debian's
# packages (downloads cached in build/cache/). Variables and kernel arguments: image-build/README.md.
ramdisk: deps
	image-build/build.sh

# The ramdisk PXE-booted under QEMU (no KVM) and driven by the reference conductor: hello,
# inventory with LLDP, image.write onto the VM's disk, power-off, a wrong checksum's wipe. The
# packages bring qemu-system-x86 and ipxe-qemu; boots run one at a time.
.PHONY: e2e
e2e: packages build ramdisk
	$(NODE) --test --test-concurrency=1 $$(find dist/test/e2e -name '*.test.js' | sort)

clean:
	rm -rf dist build
