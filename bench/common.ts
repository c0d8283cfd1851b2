/** What the benchmark parts share: measurement helpers and the shape of their results. */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { format, getFileInfo, resolveConfig } from 'prettier';

/** A memory figure of a process from /proc, MiB: `VmRSS` now or `VmHWM`, the peak resident set since it started. */
export function procMiB(pid: number, field: 'VmRSS' | 'VmHWM'): number | undefined {
  try {
    const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Math.round(Number(m[1]) / 1024) : undefined;
  } catch {
    return undefined;
  }
}

export const percentile = (xs: number[], p: number): number => {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
};

export const round1 = (x: number): number => Math.round(x * 10) / 10;

/** Milliseconds since `t0` (a `performance.now()` reading). */
export const ms = (t0: number): number => Math.round(performance.now() - t0);

/** A progress line on the terminal (stderr, so that piping the tables elsewhere keeps them clean). */
export function progress(line: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${line}\n`);
}

/** One target of the issue, with its measured value and whether it is met. */
export interface TargetResult {
  target: string;
  measured: string;
  met: boolean;
  /** Why it is missed (or what it depends on). */
  note?: string;
}

export type Row = Record<string, string | number | boolean | null | undefined>;

/**
 * A Markdown file the benchmark writes (docs/RELIABILITY.md, docs/BENCHMARKS.md), formatted as `npm run format` would
 * format it (the repository's prettier settings and .prettierignore), so that `npm run format:check` passes on what
 * `--write` left. docs/BENCHMARKS.md is in .prettierignore (its wide tables stay one row per line) and is written as is.
 */
export async function writeMarkdown(root: string, relative: string, md: string): Promise<void> {
  const file = path.join(root, relative);
  const { ignored } = await getFileInfo(file, { ignorePath: path.join(root, '.prettierignore') });
  if (ignored) return writeFileSync(file, md);
  const options = (await resolveConfig(file)) ?? {};
  writeFileSync(file, await format(md, { ...options, filepath: file }));
}
