/**
 * The CLI's help and its start: `chaos --help` lists every fault `runChaos` accepts, and `--help` loads none of the
 * heavy modules (each command loads its own when it runs; `npm run bench -- cli` measures the start time).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CHAOS_FAULTS } from '../../pipeline/chaos';
import { CLI } from '../helpers/cli';

const dir = mkdtempSync(path.join(os.tmpdir(), 'selfheal-cli-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Runs the CLI from sources with a hook that prints, at exit, the packages it loaded from node_modules. */
function runAndListPackages(args: string[], env: NodeJS.ProcessEnv = {}) {
  const probe = path.join(dir, 'loaded-packages.cjs');
  writeFileSync(
    probe,
    `process.on('exit', () => {
      const names = new Set();
      for (const file of Object.keys(require.cache)) {
        const m = /node_modules\\/((?:@[^/]+\\/)?[^/]+)\\//.exec(file);
        if (m) names.add(m[1]);
      }
      process.stderr.write('\\nLOADED ' + JSON.stringify([...names].sort()) + '\\n');
    });\n`,
  );
  const r = spawnSync(process.execPath, ['--require', probe, ...CLI, ...args], {
    env: { PATH: process.env.PATH, ...env },
    encoding: 'utf8',
    timeout: 60_000,
  });
  const line = /\nLOADED (.*)\n/.exec(r.stderr);
  expect(line, r.stderr).not.toBeNull();
  return { status: r.status, stdout: r.stdout, packages: JSON.parse(line![1]!) as string[] };
}

// Not esbuild: tsx, which runs the sources here, loads it itself.
const HEAVY = ['@temporalio/client', '@temporalio/worker', 'pg', 'ioredis', 'dockerode', 'zod', 'pino', 'prom-client'];

describe('selfheal CLI', () => {
  it('chaos --help lists every fault with its arguments', () => {
    const r = runAndListPackages(['chaos', '--help']);
    expect(r.status).toBe(0);
    for (const [fault, args] of Object.entries(CHAOS_FAULTS)) {
      expect(r.stdout).toContain(`${fault} ${args}`.trim());
    }
  });

  it('--help loads commander and none of the heavy modules', () => {
    const r = runAndListPackages(['--help']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/Commands:/);
    expect(r.packages).toContain('commander');
    expect(r.packages.filter((p) => HEAVY.includes(p))).toEqual([]);
  });

  it('a command loads its modules when it runs: migrate with a bad environment stops at the configuration', () => {
    // The configuration (zod) is loaded and refuses; pg, which migrate would use next, never is.
    const r = runAndListPackages(['migrate'], { DATABASE_URL: 'nope' });
    expect(r.status).toBe(2);
    expect(r.packages).toContain('zod');
    expect(r.packages.filter((p) => HEAVY.includes(p) && p !== 'zod')).toEqual([]);
  });
});
