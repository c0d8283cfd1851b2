/**
 * The compiled build, as users run it: `bin/selfheal.cjs` runs `dist/starter/cli.js` (no TypeScript loader) and
 * says so in one line when there is no build. (`up.test.ts` checks that a compiled `selfheal up` starts compiled
 * workers.)
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildCli } from '../../starter/cli';
import { buildOnce, COMPILED_CLI } from '../helpers/cli';

describe('the compiled build', () => {
  beforeAll(() => buildOnce(), 300_000);

  it('selfheal --help exits 0 and lists every command', () => {
    const r = spawnSync(process.execPath, [COMPILED_CLI, '--help'], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    const commands = buildCli().commands.map((c) => c.name());
    expect(commands.length).toBeGreaterThan(10);
    for (const name of commands) expect(r.stdout).toMatch(new RegExp(`^  ${name}\\b`, 'm'));
  });

  it('without dist/ it says so in one line and exits non-zero', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'selfheal-unbuilt-'));
    try {
      mkdirSync(path.join(dir, 'bin'));
      copyFileSync(COMPILED_CLI, path.join(dir, 'bin', 'selfheal.cjs'));
      const r = spawnSync(process.execPath, [path.join(dir, 'bin', 'selfheal.cjs'), '--help'], {
        encoding: 'utf8',
        timeout: 60_000,
      });
      expect(r.status).not.toBe(0);
      expect(r.stdout).toBe('');
      expect(r.stderr).toBe('selfheal is not built: run npm run build\n');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
