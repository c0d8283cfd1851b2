/**
 * Fault injection into the reference pipeline (`selfheal chaos <fault> [args...]`). Every fault does the real thing
 * (a SIGKILL, a stopped container, real lease keys, real rows) rather than set a flag a monitor would read, and is
 * recorded in the Redis list `pipeline:chaos` so that `clear()`, from any process, knows what to undo.
 */
import {
  chaosKey,
  createChaosContext,
  llmKey,
  registerLlmProcess,
  type Chaos,
  type ChaosOptions,
} from './chaos-context';
import { clearFaults } from './chaos-clear';
import { dataFaults } from './chaos-data';
import { llmFaults } from './chaos-llm';
import { workerFaults } from './chaos-workers';
import { CHAOS_FAULTS, type ChaosFault } from './faults';

export { CHAOS_FAULTS, type ChaosFault };
export {
  ChaosError,
  type Chaos,
  type ChaosErrorType,
  type ChaosOptions,
  type ChaosRecord,
  type ChaosResult,
  type LlmProcess,
} from './chaos-context';
export { chaosKey, llmKey, registerLlmProcess };
export { runChaos } from './chaos-cli';

export function createChaos(opts: ChaosOptions): Chaos {
  const ctx = createChaosContext(opts);
  const { killWorker, hangWorker, errorRate, slow } = workerFaults(ctx);
  const { staleLocks, stuckDocuments, redisFlush, duplicateEntries, poison } = dataFaults(ctx);
  const { llmDown } = llmFaults(ctx);
  const { clear, active } = clearFaults(ctx);
  return {
    killWorker,
    hangWorker,
    errorRate,
    slow,
    staleLocks,
    stuckDocuments,
    llmDown,
    redisFlush,
    duplicateEntries,
    poison,
    clear,
    active,
  };
}
