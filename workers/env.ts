import { CONFIG_EXIT_CODE, formatConfigProblems, parseConfig, type Config } from '../core/config';

/**
 * Parses the environment once at an entry point. Bad configuration prints one message listing every bad
 * variable and exits with code 2 before anything is started or written.
 */
export function loadConfigOrExit(env: NodeJS.ProcessEnv = process.env): Config {
  const result = parseConfig(env);
  if (result.ok) return result.config;
  process.stderr.write(formatConfigProblems(result.problems) + '\n');
  process.exit(CONFIG_EXIT_CODE);
}

/**
 * For processes started by `selfheal up` with an IPC channel: the channel must not keep the process alive once
 * its work is done, and its closing (the parent went away, even by SIGKILL) must stop the process.
 */
export function stopWhenParentGoes(stop: () => void): void {
  if (!process.send) return;
  process.channel?.unref();
  process.once('disconnect', stop);
}
