// Kept in step with package.json by a test; a bundled ramdisk has no package.json to read.
export const AGENT_VERSION = '0.1.0';
