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
