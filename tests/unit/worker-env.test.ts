import { spawn } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { WORKER_NODE_OPTIONS, workerEnv } from '../../starter/up';
import { nodeCommand } from '../../workers/project';
import { ROOT } from '../helpers/cli';

describe('workerEnv: the memory settings of the worker processes `selfheal up` starts', () => {
  it('caps the heap and the malloc arenas when the operator set nothing', () => {
    const env = workerEnv({ PATH: '/bin' });
    expect(env).toEqual({ PATH: '/bin', NODE_OPTIONS: WORKER_NODE_OPTIONS, MALLOC_ARENA_MAX: '2' });
    expect(WORKER_NODE_OPTIONS).toBe('--max-old-space-size=96 --max-semi-space-size=4');
  });

  it("puts the operator's NODE_OPTIONS after its own, so that theirs win, and keeps their MALLOC_ARENA_MAX", () => {
    const env = workerEnv({ NODE_OPTIONS: ' --max-old-space-size=512 ', MALLOC_ARENA_MAX: '8' });
    expect(env.NODE_OPTIONS).toBe(`${WORKER_NODE_OPTIONS} --max-old-space-size=512`);
    expect(env.MALLOC_ARENA_MAX).toBe('8');
  });

  it('leaves the environment it was given unchanged', () => {
    const given = { NODE_OPTIONS: '--enable-source-maps' };
    workerEnv(given);
    expect(given).toEqual({ NODE_OPTIONS: '--enable-source-maps' });
  });
});

describe('stopWhenParentGoes: a process `selfheal up` started stops when up goes away', () => {
  /**
   * A child with an IPC channel that calls stopWhenParentGoes (before or after its parent closed the channel) and
   * prints `stopped` when its stop runs, or `still running` after 5 s.
   */
  async function child(register: 'before' | 'after'): Promise<string> {
    const env = JSON.stringify(path.join(ROOT, 'workers/env.ts'));
    const code = `
      const { stopWhenParentGoes } = require(${env});
      const register = () => stopWhenParentGoes(() => { process.stdout.write('stopped\\n'); process.exit(0); });
      setTimeout(() => { process.stdout.write('still running\\n'); process.exit(1); }, 5000);
      if (${JSON.stringify(register)} === 'before') { register(); process.stdout.write('ready\\n'); }
      else process.once('disconnect', () => setImmediate(register));`;
    // node with tsx's hook (nodeCommand's arguments without its script), running `code`.
    const [exe, ...hook] = nodeCommand(path.join(ROOT, 'workers/env.ts')).slice(0, -1);
    const proc = spawn(exe!, [...hook, '-e', code], { stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
    let out = '';
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready') && proc.connected) proc.disconnect();
    });
    if (register === 'after') proc.disconnect();
    await new Promise((resolve) => proc.once('exit', resolve));
    return out;
  }

  it('the channel closes after the call: the stop runs', async () => {
    expect(await child('before')).toBe('ready\nstopped\n');
  });

  it('the channel closed before the call (up killed while the process started): the stop runs at once', async () => {
    expect(await child('after')).toBe('stopped\n');
  });
});
