/**
 * The version a BFB declares in its `info` image (ID 50): a JSON document written by the BFB
 * build. `Version` names the bundle; older or hand-made BFBs may carry the bundle name only in a
 * member entry, so any value that looks like a bundle name is the fallback.
 */

const BUNDLE_NAME = /\bbf-(fw)?bundle[-_.]/i;

const firstBundleName = (value: unknown, depth: number): string | null => {
  if (depth > 8) return null;
  if (typeof value === 'string') return BUNDLE_NAME.test(value) ? value.trim() : null;
  if (Array.isArray(value)) {
    for (const item of value) {
      const found = firstBundleName(item, depth + 1);
      if (found !== null) return found;
    }
    return null;
  }
  if (typeof value === 'object' && value !== null) {
    for (const item of Object.values(value)) {
      const found = firstBundleName(item, depth + 1);
      if (found !== null) return found;
    }
  }
  return null;
};

/** The declared version, or null when the image is not JSON or declares none. */
export const bfbVersionFromInfo = (data: Buffer): string | null => {
  let parsed: unknown;
  try {
    // Trailing NULs are padding some builders leave inside the declared length.
    parsed = JSON.parse(data.toString('utf8').replace(/\0+$/, ''));
  } catch {
    return null;
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return null;
  const declared = (parsed as Record<string, unknown>).Version;
  if (typeof declared === 'string' && declared.trim() !== '') return declared.trim();
  return firstBundleName(parsed, 0);
};
