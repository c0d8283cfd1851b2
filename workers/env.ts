import { readRunbooksFile } from '../activities/runbook-source';
import { CONFIG_EXIT_CODE, formatConfigProblems, parseConfig, type Config } from '../core/config';

/**
 * Parses the environment once at an entry point, and validates the runbooks file (RUNBOOKS_FILE, else the built-in
 * one) unless `runbooks` is false (`selfheal doctor` reports it as a check instead). Bad configuration prints one
 * message listing every bad variable (for the runbooks file: its name, line and field) and exits with code 2 before
 * anything is started or written.
 */
export function loadConfigOrExit(env: NodeJS.ProcessEnv = process.env, opts: { runbooks?: boolean } = {}): Config {
  const result = parseConfig(env);
  if (result.ok) {
    if (opts.runbooks === false) return result.config;
    const runbooks = readRunbooksFile(result.config.RUNBOOKS_FILE);
    if (runbooks.ok) return result.config;
    process.stderr.write(
      `${formatConfigProblems([
        {
          variable: 'RUNBOOKS_FILE',
          expected: 'expected a valid runbooks file',
          got: result.config.RUNBOOKS_FILE ?? '(the built-in one)',
        },
      ])}\n${runbooks.error
        .split('\n')
        .map((line) => `    ${line}`)
        .join('\n')}\n`,
    );
    process.exit(CONFIG_EXIT_CODE);
  }
  process.stderr.write(formatConfigProblems(result.problems) + '\n');
  process.exit(CONFIG_EXIT_CODE);
}

/**
 * For processes started by `selfheal up` with an IPC channel: the channel must not keep the process alive once
 * its work is done, and its closing (the parent went away, even by SIGKILL) must stop the process. A channel that
 * closed before this call (the parent killed while the process started) stops it at once.
 */
export function stopWhenParentGoes(stop: () => void): void {
  if (!process.send) return;
  if (!process.connected) {
    stop();
    return;
  }
  process.channel?.unref();
  process.once('disconnect', stop);
}
