/** The demo's scenario: one scripted fault per seed class, and which healing each must lead to. */
import { STAGES } from '../core/keys';
import type { AnomalyType } from '../core/types';
import type { ChaosResult } from '../pipeline/chaos';
import type { WorkerRegistration } from '../pipeline/registry';
import { DemoError } from './demo-types';

/** One scripted fault: what to inject and which healing it must lead to. */
interface StepSpec {
  fault: string;
  chaos: string[][];
  type: AnomalyType;
  /** The anomaly's target; stale locks are named by their owner, which the injection makes up. */
  target: (results: ChaosResult[]) => string;
}

/**
 * One fault per seed class, in order. Restarts are spread over the containers (kill: a worker of the last stage;
 * errors: the second worker of the first stage; slowness: the first) so that no container nears the circuit
 * breaker (3 restarts an hour).
 */
export function demoSteps(workers: WorkerRegistration[]): StepSpec[] {
  const first = STAGES[0];
  const last = STAGES[STAGES.length - 1]!;
  const of = (stage: string) => workers.filter((w) => w.stage === stage);
  const [a, b] = of(first);
  const victim = of(last)[0];
  if (!a || !b || !victim) {
    throw new DemoError(`the demo needs two ${first} workers and a ${last} worker; found ${workers.length} workers`);
  }
  const name = (w: WorkerRegistration) => w.container ?? w.worker;
  return [
    {
      fault: 'stuck-documents',
      chaos: [['stuck-documents', '5', first]],
      type: 'stuck_documents',
      target: () => first,
    },
    {
      fault: 'kill-worker',
      chaos: [['kill-worker', victim.worker]],
      type: 'unhealthy_container',
      target: () => name(victim),
    },
    {
      fault: 'error-rate',
      chaos: [['error-rate', first, '0.9', b.worker]],
      type: 'error_rate_spike',
      target: () => first,
    },
    { fault: 'slow', chaos: [['slow', first, '25', a.worker]], type: 'processing_time_anomaly', target: () => first },
    {
      fault: `hang-worker silent (every ${first} worker)`,
      chaos: [
        ['hang-worker', a.worker, 'silent'],
        ['hang-worker', b.worker, 'silent'],
      ],
      type: 'stalled_queue',
      target: () => first,
    },
    {
      fault: 'stale-lock',
      chaos: [['stale-lock', '3']],
      type: 'stale_locks',
      target: (results) => {
        const owner = results[0]?.owner;
        return typeof owner === 'string' ? owner : '';
      },
    },
  ];
}
