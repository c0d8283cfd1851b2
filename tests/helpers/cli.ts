/**
 * The `selfheal` CLI as tests run it: from the TypeScript sources (node with tsx's CommonJS hook on
 * starter/cli.ts), so that tests need no build. Only the test of the compiled build runs `bin/selfheal.cjs`.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { nodeCommand } from '../../workers/project';

export const ROOT = path.resolve(__dirname, '../..');

/** node's arguments that run the CLI: `spawn(process.execPath, [...CLI, 'status', '--json'])`. */
export const CLI: string[] = nodeCommand(path.join(ROOT, 'starter/cli.ts')).slice(1);

/** The compiled CLI users run (needs `npm run build`). */
export const COMPILED_CLI = path.join(ROOT, 'bin/selfheal.cjs');

let built = false;

/** What `npm run build` compiles or copies (tsconfig.build.json's `include`, the schema, the runbook file). */
const BUILD_INPUTS = ['core', 'workflows', 'activities', 'workers', 'starter', 'pipeline', 'db', 'runbooks'];
/** The build's last step writes it: dist/ is current when no input is newer. */
const BUILD_STAMP = path.join(ROOT, 'dist/runbooks/default.yaml');

function newestInput(dir: string): number {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) newest = Math.max(newest, newestInput(p));
    else if (/\.(ts|sql|yaml)$/.test(e.name)) newest = Math.max(newest, statSync(p).mtimeMs);
  }
  return newest;
}

/** dist/ holds a build of the current sources. */
export function buildIsCurrent(): boolean {
  if (!existsSync(BUILD_STAMP)) return false;
  const stamp = statSync(BUILD_STAMP).mtimeMs;
  return BUILD_INPUTS.every((d) => newestInput(path.join(ROOT, d)) <= stamp);
}

/**
 * `npm run build`, once per test process and only when dist/ is older than its sources, so that a test of the
 * compiled build never runs a stale one. (Test files run in parallel: rebuilding a current dist/ would rewrite files
 * that other files' selfheal processes are loading.)
 */
export function buildOnce(): void {
  if (built || buildIsCurrent()) return;
  const r = spawnSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, encoding: 'utf8', timeout: 300_000 });
  if (r.status !== 0) throw new Error(`npm run build failed (exit ${r.status}):\n${r.stdout}${r.stderr}`);
  built = true;
}
