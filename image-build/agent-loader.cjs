#!/usr/bin/env node
/* global require, process, __dirname, module */
/* eslint-disable @typescript-eslint/no-require-imports -- this file is CommonJS in the image */
// /usr/lib/bm-agent/main.js in the ramdisk. It runs the agent's CommonJS bundle (agent.js) with
// the V8 code cache that the build made for it with the same node binary (agent.cache). V8 then
// reads the bytecode of the bundle's top level and of everything `bm-agent run` calls up to its
// first dial instead of parsing and compiling 1.5 MB of JavaScript at every boot.
//
// Without the cache file, or when V8 rejects it (another node binary, other V8 flags), the bundle
// is compiled as usual: the agent starts the same, only later, and says so on stderr.
//
// BMA_CODE_CACHE=off ignores the cache. BMA_CODE_CACHE_WRITE=FILE writes a new cache to FILE when
// the process exits; the build runs the agent once that way.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const Module = require('node:module');

const bundle = path.join(__dirname, 'agent.js');
const cacheFile = path.join(__dirname, 'agent.cache');
const writeTo = process.env.BMA_CODE_CACHE_WRITE;
// Not for the agent's children (a hash worker, a shell on the DPU).
delete process.env.BMA_CODE_CACHE_WRITE;

let cachedData;
if (!writeTo && process.env.BMA_CODE_CACHE !== 'off') {
  try {
    cachedData = fs.readFileSync(cacheFile);
  } catch {
    cachedData = undefined;
  }
}

// latin1: a one-byte string, read without UTF-8 decoding. esbuild (--charset=ascii) escapes every
// non-ASCII character of the code itself; only a comment can hold UTF-8 bytes, and read this way
// they become other characters of the same comment. As UTF-8, one such character would have
// made V8 keep and scan the whole 1.5 MB source as a two-byte string.
// A cache holds the name of its script. Made under the path the bundle has in the image, it is the
// same bytes wherever the build ran.
const script = new vm.Script(Module.wrap(fs.readFileSync(bundle, 'latin1')), {
  filename: writeTo ? '/usr/lib/bm-agent/agent.js' : bundle,
  cachedData,
});
if (cachedData && script.cachedDataRejected) {
  process.stderr.write(
    `bm-agent: V8 rejected ${cacheFile} (another node binary or other V8 flags); compiling the bundle instead\n`,
  );
}
if (writeTo) process.once('exit', () => fs.writeFileSync(writeTo, script.createCachedData()));

// The bundle runs as the module it would be if node had loaded it: its own exports, and a require
// that resolves from its folder (only node's built-in modules are left to resolve).
const agent = new Module(bundle, module);
agent.filename = bundle;
agent.paths = module.paths;
script
  .runInThisContext()
  .call(agent.exports, agent.exports, Module.createRequire(bundle), agent, bundle, __dirname);
