/**
 * The faults `selfheal chaos` injects, with their arguments: the one list that `runChaos` accepts and the CLI's help
 * shows. A module of its own, with no imports, so that `selfheal --help` does not load the fault injection.
 */
export const CHAOS_FAULTS = {
  'kill-worker': '<worker>',
  'hang-worker': '<worker> [silent]',
  'error-rate': '<stage> <fraction 0..1> [worker]',
  slow: '<stage> <factor> [worker]',
  'stale-lock': '<n>',
  'stuck-documents': '<n> [stage]',
  'llm-down': '',
  'redis-flush': '',
  'duplicate-entries': '<n> [stage]',
  poison: '<n> [stage]',
  clear: '',
} as const;
export type ChaosFault = keyof typeof CHAOS_FAULTS;
