/** Plain-text rendering for a person at a console: tables and a progress bar. */

export const renderTable = (
  headers: string[],
  rows: Array<Array<string | number | null | undefined>>,
): string => {
  const cells = rows.map((row) =>
    row.map((cell) => (cell === null || cell === undefined ? '-' : String(cell))),
  );
  const widths = headers.map((header, column) =>
    Math.max(header.length, ...cells.map((row) => (row[column] ?? '').length)),
  );
  const line = (row: string[]): string =>
    row
      .map((cell, column) => cell.padEnd(widths[column] ?? 0))
      .join('  ')
      .trimEnd();
  return [line(headers), line(widths.map((width) => '-'.repeat(width))), ...cells.map(line)].join('\n');
};

export const formatBytes = (bytes: number | null | undefined): string => {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes)) return '-';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value >= 100 || unit === 0 ? value.toFixed(0) : value.toFixed(1)} ${units[unit]}`;
};

export interface ProgressLine {
  phase: string;
  done: number;
  total: number | null;
  unit: 'bytes' | 'steps';
  rate: number | null;
  message: string | null;
}

export const renderProgress = (progress: ProgressLine, width = 30): string => {
  const fraction = progress.total ? Math.min(1, progress.done / progress.total) : null;
  const bar =
    fraction === null
      ? ''
      : `[${'#'.repeat(Math.round(fraction * width)).padEnd(width, '.')}] ${(fraction * 100).toFixed(0).padStart(3)}% `;
  const amount =
    progress.unit === 'bytes'
      ? `${formatBytes(progress.done)}${progress.total ? ` / ${formatBytes(progress.total)}` : ''}`
      : `${progress.done}${progress.total ? `/${progress.total}` : ''}`;
  const rate = progress.rate !== null && progress.unit === 'bytes' ? ` ${formatBytes(progress.rate)}/s` : '';
  return `${progress.phase.padEnd(12)} ${bar}${amount}${rate}${progress.message ? ` ${progress.message}` : ''}`;
};

/** Redraws one status line on a TTY; prints nothing otherwise (logs carry the story there). */
export class ProgressBar {
  private lastLength = 0;

  constructor(private readonly out: NodeJS.WriteStream = process.stderr) {}

  get enabled(): boolean {
    return Boolean(this.out.isTTY);
  }

  update(progress: ProgressLine): void {
    if (!this.enabled) return;
    const text = renderProgress(progress).slice(0, (this.out.columns || 80) - 1);
    this.out.write(`\r${text.padEnd(this.lastLength)}`);
    this.lastLength = text.length;
  }

  done(): void {
    if (!this.enabled || this.lastLength === 0) return;
    this.out.write(`\r${' '.repeat(this.lastLength)}\r`);
    this.lastLength = 0;
  }
}
