/** The command-line form of fault injection, `selfheal chaos <fault> [args...]`. */
import { STAGES, type Stage } from '../core/keys';
import { ChaosError, checkStage, type Chaos, type ChaosResult } from './chaos-context';
import { CHAOS_FAULTS, type ChaosFault } from './faults';

function parseNumber(what: string, raw: string | undefined, opts: { int?: boolean; min: number; max: number }): number {
  if (raw === undefined) throw new ChaosError('invalid_argument', `${what}: missing`);
  const re = opts.int ? /^\d+$/ : /^\d+(\.\d+)?$|^\.\d+$/;
  const n = Number(raw);
  if (!re.test(raw.trim()) || !Number.isFinite(n) || n < opts.min || n > opts.max) {
    throw new ChaosError(
      'invalid_argument',
      `${what}: expected ${opts.int ? 'a whole number' : 'a number'} between ${opts.min} and ${opts.max}, got "${raw}"`,
    );
  }
  return n;
}

function parseStage(raw: string | undefined): Stage {
  if (raw === undefined) throw new ChaosError('invalid_argument', `stage: missing (one of ${STAGES.join(', ')})`);
  return checkStage(raw);
}

/** The `<n> [stage]` arguments of the faults that make `n` documents or entries of a stage (default the first). */
function countAndStage(fault: string, args: string[]): [number, Stage | undefined] {
  return [
    parseNumber(`${fault} n`, args[0], { int: true, min: 1, max: 1_000 }),
    args[1] === undefined ? undefined : parseStage(args[1]),
  ];
}

/**
 * The CLI form, `selfheal chaos <fault> [args...]`, mapped to the methods with validated arguments. Throws a
 * `ChaosError` (with `type`) on an unknown fault, a bad or missing argument, an unknown stage or worker.
 */
export async function runChaos(chaos: Chaos, fault: string, args: string[]): Promise<ChaosResult> {
  if (!Object.hasOwn(CHAOS_FAULTS, fault)) {
    throw new ChaosError(
      'unknown_fault',
      `unknown fault "${fault}": expected one of ${Object.keys(CHAOS_FAULTS).join(', ')}`,
    );
  }
  const f = fault as ChaosFault;
  const usage = `${f} ${CHAOS_FAULTS[f]}`.trim();
  const arity: Record<ChaosFault, [number, number]> = {
    'kill-worker': [1, 1],
    'hang-worker': [1, 2],
    'error-rate': [2, 3],
    slow: [2, 3],
    'stale-lock': [1, 1],
    'stuck-documents': [1, 2],
    'llm-down': [0, 0],
    'redis-flush': [0, 0],
    'duplicate-entries': [1, 2],
    poison: [1, 2],
    clear: [0, 0],
  };
  const [min, max] = arity[f];
  if (args.length < min || args.length > max) {
    throw new ChaosError(
      'invalid_argument',
      `${f}: expected ${min === max ? min : `${min} to ${max}`} argument${max === 1 ? '' : 's'}, got ${args.length} (usage: ${usage})`,
    );
  }
  switch (f) {
    case 'kill-worker':
      return chaos.killWorker(args[0]!);
    case 'hang-worker':
      if (args[1] !== undefined && args[1] !== 'silent') {
        throw new ChaosError(
          'invalid_argument',
          `hang-worker: the second argument can only be "silent", got "${args[1]}"`,
        );
      }
      return chaos.hangWorker(args[0]!, args[1] === 'silent');
    case 'error-rate':
      return chaos.errorRate(
        parseStage(args[0]),
        parseNumber('error-rate fraction', args[1], { min: 0, max: 1 }),
        args[2],
      );
    case 'slow':
      return chaos.slow(parseStage(args[0]), parseNumber('slow factor', args[1], { min: 0.01, max: 1_000 }), args[2]);
    case 'stale-lock':
      return chaos.staleLocks(parseNumber('stale-lock n', args[0], { int: true, min: 1, max: 1_000 }));
    case 'stuck-documents':
      return chaos.stuckDocuments(...countAndStage('stuck-documents', args));
    case 'llm-down':
      return chaos.llmDown();
    case 'redis-flush':
      return chaos.redisFlush();
    case 'duplicate-entries':
      return chaos.duplicateEntries(...countAndStage('duplicate-entries', args));
    case 'poison':
      return chaos.poison(...countAndStage('poison', args));
    case 'clear':
      return chaos.clear();
  }
}
