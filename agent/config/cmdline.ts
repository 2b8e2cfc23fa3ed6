/**
 * Splits a kernel command line the way the kernel does: whitespace separates arguments, double
 * quotes may wrap spaces inside a value (`key="a b"`) and are removed.
 */
export const splitCmdline = (text: string): string[] => {
  const args: string[] = [];
  let current = '';
  let inQuote = false;
  let started = false;
  for (const char of text) {
    if (char === '"') {
      inQuote = !inQuote;
      started = true;
    } else if (!inQuote && /\s/.test(char)) {
      if (started) args.push(current);
      current = '';
      started = false;
    } else {
      current += char;
      started = true;
    }
  }
  if (started) args.push(current);
  return args;
};

/**
 * key=value arguments as a map; a later argument wins, as with IPA. Arguments without `=` are
 * flags for the kernel (`quiet`, `ro`) and carry nothing for the agent.
 */
export const parseCmdline = (text: string): Map<string, string> => {
  const params = new Map<string, string>();
  for (const arg of splitCmdline(text)) {
    const eq = arg.indexOf('=');
    if (eq <= 0) continue;
    params.set(arg.slice(0, eq), arg.slice(eq + 1));
  }
  return params;
};
