/** The target disk stage (agent/image/contracts.ts): choosing a disk safely and wiping its signatures. */
export { listCandidateDisks } from './candidates.js';
export { findFirstMatch, HINT_FIELDS, parseRootDeviceHints, type ParsedHint } from './hints.js';
export { chooseDefaultDisk, DEFAULT_MIN_DISK_BYTES, selectTargetDisk, type SelectDeps } from './select.js';
export { rereadPartitions, wipeSignatures, type DiskToolOptions } from './wipe.js';
