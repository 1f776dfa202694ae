# atomic-disk. `make run` starts a local 3-replica cluster plus the NBD gateway on 127.0.0.1:10809;
# `make test` runs type-check, lint and the whole test suite. Both install what they need.
SHELL := /bin/bash
NODE_MODULES_STAMP := node_modules/.install-stamp
DEB_PACKAGES := libnbd-bin python3-libnbd qemu-utils nbdkit fuse3 fio nbd-client e2fsprogs
# Commands that prove each Debian package above is present (same order).
DEB_PROBES := /usr/bin/nbdinfo /usr/lib/python3/dist-packages/nbd.py /usr/bin/qemu-io /usr/bin/nbdkit /usr/bin/fusermount3 /usr/bin/fio /usr/sbin/nbd-client /usr/sbin/mkfs.ext4
DATA ?= .data
SEED ?= 1
STEPS ?= 4000
REPLICAS ?= 3

.PHONY: all build deps deb-deps typecheck lint test test-only run clean sim sim-soak bench-replicas bench-nbd bench-core bench

all: build

# `npm install` rather than `npm ci`: the lock cannot list Biome's per-platform binaries that this
# registry does not serve, and npm 11's `npm ci` refuses such a lock. Versions still come from it.
$(NODE_MODULES_STAMP): package.json package-lock.json
	npm install --no-audit --no-fund --loglevel=error
	@touch $@

deps: $(NODE_MODULES_STAMP)

# Debian packages for the real NBD clients used by the integration tests and benchmarks.
deb-deps:
	@missing=0; for p in $(DEB_PROBES); do [ -e "$$p" ] || missing=1; done; \
	if [ $$missing = 1 ]; then \
	  echo "installing Debian packages: $(DEB_PACKAGES)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $(DEB_PACKAGES) >/dev/null; \
	fi

build: deps
	npx tsc -p tsconfig.json

typecheck: deps
	npx tsc -p tsconfig.test.json

lint: deps
	npx biome check src test bench

# The whole suite: type-check, lint, build (integration tests spawn the built CLI), then vitest.
test: deps deb-deps typecheck lint build
	@bash scripts/run-tests.sh

# Vitest only, for quick iteration (no install, no lint). FILTER narrows to matching files.
test-only:
	@bash scripts/run-tests.sh $(FILTER)

run: deps build
	node dist/cli/main.js dev --data $(DATA) --listen 127.0.0.1:10809

sim: deps build
	node dist/cli/main.js sim --seed $(SEED) --steps $(STEPS) --replicas $(REPLICAS)

sim-soak: deps build
	node dist/cli/main.js sim-soak --seeds 3000

bench-replicas: deps build
	node dist/cli/main.js bench-replicas

bench-nbd: deps deb-deps build
	bash bench/nbd-vs-nbdkit.sh

# The protocol's CPU per write without I/O: 3 register cores and the codec in one thread.
# With the V8 flags of the atomic-disk script's shebang (src/cli/node_flags.ts), as bench-nbd.
bench-core: deps build
	node $$(sed -n '1s/^#!.*env -S node//p' dist/cli/main.js) bench/core-codec.mjs

bench: bench-replicas bench-nbd bench-core

clean:
	rm -rf dist test-results
