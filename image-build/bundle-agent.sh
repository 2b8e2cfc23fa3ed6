#!/usr/bin/env bash
# The agent as the ramdisk runs it, into OUTDIR (build.sh installs it as /usr/lib/bm-agent/):
#
#   main.js               the loader (agent-loader.cjs): runs agent.js from agent.cache
#   agent.js              the whole agent as one CommonJS bundle
#   agent.cache           V8's code cache for agent.js, made with NODE (the image's node binary)
#   hash-worker-entry.js  the hash worker, loaded by file name beside the bundle
#   package.json          { "type": "commonjs" } for the two .js files node loads by name
#
#   image-build/bundle-agent.sh OUTDIR NODE
#
# When no usable code cache can be made, OUTDIR has no agent.cache, the reason is on stderr and
# the status is still 0: the agent then compiles its bundle at every start, later but the same.
# Any other failure is fatal. Needs esbuild (npm ci).
set -euo pipefail
export LC_ALL=C

OUT=${1:?usage: bundle-agent.sh OUTDIR NODE}
NODE=${2:?usage: bundle-agent.sh OUTDIR NODE}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
ESBUILD=$REPO/node_modules/.bin/esbuild

say() { printf 'bundle-agent: %s\n' "$*" >&2; }
die() {
  say "error: $*"
  exit 1
}
[[ -x $ESBUILD ]] || die "esbuild is missing: run npm ci"
[[ -x $NODE ]] || die "$NODE is not an executable node binary"

rm -rf "$OUT"
mkdir -p "$OUT"
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT

# CommonJS, because node 20 takes a code cache for scripts (vm.Script) only, not for ES modules.
# hash-worker.ts finds the worker by a URL relative to import.meta.url, which a CommonJS bundle
# lacks: the banner makes it the bundle's own file URL. The banner's "use strict" keeps the
# bundle strict, as its ES modules were; --charset=ascii escapes every non-ASCII character of the
# code (the loader reads it as latin1).
(cd "$REPO" && "$ESBUILD" agent/main.ts agent/image/hash-worker-entry.ts --bundle --platform=node \
  --format=cjs --target=node20 --outdir="$OUT" --entry-names='[name]' --legal-comments=none \
  --charset=ascii --log-level=warning --define:import.meta.url=__bmaModuleUrl \
  --banner:js="\"use strict\"; var __bmaModuleUrl = require('node:url').pathToFileURL(__filename).href;")
mv "$OUT/main.js" "$OUT/agent.js"
# The loader compiles the bundle as a function body, where a #! line is a syntax error; a comment
# of the same length keeps every line and column where it was.
sed -i '1s|^#!|//|' "$OUT/agent.js"
# Each module the bundle loads by a relative URL must be beside it, or it fails at run time only.
for ref in $(grep -o 'new URL("\./[^"]*", __bmaModuleUrl)' "$OUT/agent.js" | sed 's/new URL("\.\/\([^"]*\)".*/\1/' | sort -u); do
  [[ -f $OUT/$ref ]] || die "the bundle loads ./$ref at run time but no entry produced it: add it to the esbuild entries"
done
install -m 755 "$HERE/agent-loader.cjs" "$OUT/main.js"
printf '{ "type": "commonjs" }\n' >"$OUT/package.json"

# The code cache: the bytecode of the bundle's top level and of every function that `bm-agent
# run` calls until its first dial has failed, made by running exactly that with NODE against a
# closed port and stopping it there. V8 takes a cache only from the same V8 run with the same
# flags; --random-seed is not among the flags it compares, and with it the cache is the same bytes
# from one build to the next. Nothing of this machine's environment reaches the agent.
printf 'bma-conductor-url=ws://127.0.0.1:9/ ipa-insecure=1\n' >"$SCRATCH/cmdline"
env -i PATH="$PATH" HOME="$SCRATCH" BMA_CMDLINE="$SCRATCH/cmdline" BMA_STATE_DIR="$SCRATCH/state" \
  BMA_CODE_CACHE_WRITE="$OUT/agent.cache" \
  "$NODE" --random-seed=1 "$OUT/main.js" run >"$SCRATCH/run.log" 2>&1 &
agent=$!
for _ in $(seq 300); do
  grep -q 'reconnecting to the conductor' "$SCRATCH/run.log" && break
  kill -0 "$agent" 2>/dev/null || break
  sleep 0.1
done
kill -TERM "$agent" 2>/dev/null || true
wait "$agent" || true

if [[ ! -s $OUT/agent.cache ]]; then
  say "warning: no code cache was made; the agent will compile its bundle at every start. Its output:"
  sed 's/^/  /' "$SCRATCH/run.log" >&2
  rm -f "$OUT/agent.cache"
elif ! env -i PATH="$PATH" "$NODE" "$OUT/main.js" --version >/dev/null 2>"$SCRATCH/check.log" ||
  [[ -s $SCRATCH/check.log ]]; then
  say "warning: the code cache does not load; the agent will compile its bundle at every start:"
  sed 's/^/  /' "$SCRATCH/check.log" >&2
  rm -f "$OUT/agent.cache"
fi
