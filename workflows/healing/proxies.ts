/**
 * The activities a healing calls, with their timeouts and retries, and `runAction`, which picks the one that carries
 * out a plan. Workflow code: imports only types of the activities.
 */
import { proxyActivities } from '@temporalio/workflow';
import type { Plan } from '../../core/plan';
import type { createActionActivities } from '../../activities/actions';
import type { createAnalysisActivities } from '../../activities/analysis';
import type { createApprovalActivities } from '../../activities/approval';
import type { createAuditActivities } from '../../activities/audit';
import type { createDetectionActivities } from '../../activities/detection';
import type { createDockerActivities } from '../../activities/docker';
import type { createEvidenceActivities } from '../../activities/evidence';
import type { createMetricsActivities } from '../../activities/metrics';
import type { createSafetyActivities } from '../../activities/safety';
import type { createSilenceActivities } from '../../activities/silences';
import { TaskQueue } from '../definitions';

export const { appendHealingLog } = proxyActivities<ReturnType<typeof createAuditActivities>>({
  startToCloseTimeout: '30 seconds',
  // The audit must be written, even after a long database outage: retry for a long while, never forever.
  retry: { maximumAttempts: 200, initialInterval: '1 second', maximumInterval: '30 seconds' },
});
export const { checkSafety, reservePermit, finishPermit } = proxyActivities<ReturnType<typeof createSafetyActivities>>({
  startToCloseTimeout: '30 seconds',
  retry: { maximumAttempts: 20, initialInterval: '1 second', maximumInterval: '30 seconds' },
});
export const { activeSilence } = proxyActivities<ReturnType<typeof createSilenceActivities>>({
  startToCloseTimeout: '30 seconds',
  retry: { maximumAttempts: 20, initialInterval: '1 second', maximumInterval: '30 seconds' },
});
export const { collectMetrics } = proxyActivities<ReturnType<typeof createMetricsActivities>>({
  taskQueue: TaskQueue.monitor,
  startToCloseTimeout: '30 seconds',
  retry: { maximumAttempts: 5 },
});
export const { recheckAnomaly } = proxyActivities<ReturnType<typeof createDetectionActivities>>({
  taskQueue: TaskQueue.monitor,
  startToCloseTimeout: '30 seconds',
  retry: { maximumAttempts: 5 },
});
export const { inspectContainers } = proxyActivities<ReturnType<typeof createDockerActivities>>({
  taskQueue: TaskQueue.actions,
  startToCloseTimeout: '15 seconds',
  retry: { maximumAttempts: 3 },
});
/**
 * Evidence for the analysis (document errors, container log tail) from the actions worker. Bounded end to end: a
 * missing actions worker costs 30 s, then the analysis goes on without it.
 */
export const { gatherEvidence } = proxyActivities<ReturnType<typeof createEvidenceActivities>>({
  taskQueue: TaskQueue.actions,
  startToCloseTimeout: '15 seconds',
  scheduleToCloseTimeout: '30 seconds',
  retry: { maximumAttempts: 2 },
});
export const actions = proxyActivities<ReturnType<typeof createActionActivities>>({
  taskQueue: TaskQueue.actions,
  startToCloseTimeout: '2 minutes',
  retry: { maximumAttempts: 5, initialInterval: '2 seconds', maximumInterval: '30 seconds' },
});

export const { verifyApproval } = proxyActivities<ReturnType<typeof createApprovalActivities>>({
  startToCloseTimeout: '10 seconds',
  retry: { maximumAttempts: 3 },
});

/** Approval notices: a few quick tries (the webhook retries inside), then the wait goes on without one. */
export const notices = proxyActivities<ReturnType<typeof createActionActivities>>({
  taskQueue: TaskQueue.actions,
  startToCloseTimeout: '1 minute',
  retry: { maximumAttempts: 3, initialInterval: '2 seconds' },
});

/** Restarts heartbeat throughout: a worker that dies mid-restart is noticed in 30 s, not at the 2-minute timeout. */
const restarts = proxyActivities<ReturnType<typeof createActionActivities>>({
  taskQueue: TaskQueue.actions,
  startToCloseTimeout: '2 minutes',
  heartbeatTimeout: '30 seconds',
  retry: { maximumAttempts: 5, initialInterval: '2 seconds', maximumInterval: '30 seconds' },
});

export function analysisProxy(timeoutMs: number) {
  return proxyActivities<ReturnType<typeof createAnalysisActivities>>({
    // The LLM timeout is enforced inside the activity; this bounds a stuck worker.
    startToCloseTimeout: timeoutMs + 30_000,
    retry: { maximumAttempts: 3 },
  });
}

/** The activity that carries out an action; escalation too is an action of the actions worker. */
export function runAction(plan: Plan, idempotencyKey: string) {
  const input = { plan, idempotencyKey };
  switch (plan.action) {
    case 'restart_worker':
      return restarts.restartWorker(input);
    case 'requeue_documents':
      return actions.requeueDocuments(input);
    case 'clear_stale_locks':
      return actions.clearStaleLocks(input);
    case 'remove_orphaned_entries':
      return actions.removeOrphanedEntries(input);
    case 'quarantine_document':
      return actions.quarantineDocument(input);
    case 'escalate_to_human':
      return actions.escalateToHuman(input);
    case 'no_action':
      return Promise.resolve({ action: 'no_action', outcome: 'nothing_to_do', details: {} });
  }
}
