/**
 * The `selfheal` CLI as tests run it: from the TypeScript sources (node with tsx's CommonJS hook on
 * starter/cli.ts), so that tests need no build. Only the test of the compiled build runs `bin/selfheal.cjs`.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { nodeCommand } from '../../workers/project';

export const ROOT = path.resolve(__dirname, '../..');

/** node's arguments that run the CLI: `spawn(process.execPath, [...CLI, 'status', '--json'])`. */
export const CLI: string[] = nodeCommand(path.join(ROOT, 'starter/cli.ts')).slice(1);

/** The compiled CLI users run (needs `npm run build`). */
export const COMPILED_CLI = path.join(ROOT, 'bin/selfheal.cjs');

let built = false;

/**
 * `npm run build`, once per test process (incremental: seconds when dist/ is current), so that a test of the
 * compiled build never runs a stale one.
 */
export function buildOnce(): void {
  if (built) return;
  const r = spawnSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, encoding: 'utf8', timeout: 300_000 });
  if (r.status !== 0) throw new Error(`npm run build failed (exit ${r.status}):\n${r.stdout}${r.stderr}`);
  built = true;
}
