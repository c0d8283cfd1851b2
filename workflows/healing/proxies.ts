/**
 * The activities a healing calls, with their timeouts and retries, and `runAction`, which picks the one that carries
 * out a plan. Workflow code: imports only types of the activities.
 */
import { patched, proxyActivities, proxyLocalActivities } from '@temporalio/workflow';
import type { Plan } from '../../core/plan';
import type { createActionActivities } from '../../activities/actions';
import type { createAnalysisActivities } from '../../activities/analysis';
import type { createApprovalActivities } from '../../activities/approval';
import type { AuditEntry, createAuditActivities, KeyedAuditEntry } from '../../activities/audit';
import type { createDetectionActivities } from '../../activities/detection';
import type { createDockerActivities } from '../../activities/docker';
import type { createEvidenceActivities } from '../../activities/evidence';
import type { createGateActivities } from '../../activities/gate';
import type { createMetricsActivities } from '../../activities/metrics';
import type { createSafetyActivities } from '../../activities/safety';
import type { createSilenceActivities } from '../../activities/silences';
import { TaskQueue, type HealingPolicy } from '../definitions';

/** `createPolicyActivities` of the healing worker (workers/activities.ts). */
interface PolicyActivities {
  currentPolicy(): Promise<HealingPolicy>;
}

/*
 * Where each step runs. The short Postgres/Redis steps of the healing worker itself (the audit, the safety state, the
 * permits, the silences, the policy, a signature's check) are local activities: they run in the worker that runs the
 * workflow, inside its workflow task, and leave one marker each in the history instead of an activity task and the
 * workflow task its completion wakes (a healing costs a third of the round trips it did). They stay remote activities
 * where that cannot hold:
 * - the analysis (analyzeAnomaly) waits for the LLM for up to LLM_TIMEOUT_MS, three times: as a local activity it
 *   would hold the workflow task open that long (heartbeated), count against the local-activity slots the short
 *   steps need, and start over from the first attempt when the worker restarts; its round trip is nothing next to the
 *   model's answer;
 * - the actions, the evidence, the Docker inspection and the notices run on the actions worker (another task queue,
 *   the only one with a Docker client), collection and detection on the monitor worker: a local activity runs only
 *   where the workflow runs;
 * - restarts heartbeat, so that a worker dying mid-restart is noticed in 30 s: local activities cannot heartbeat.
 * Local activities in a row run within one workflow task, whose clock (`Date.now()`) does not move between them: the
 * `now` they are given (permits, silences, the safety state) is that task's start, at most a few seconds behind.
 * Histories from before (remote activities) replay the old commands: `local()` is the patch that tells.
 */
export const local = (): boolean => patched('local-activities');

/** The audit must be written, even after a long database outage: retry for a long while, never forever. */
const auditRetry = { maximumAttempts: 200, initialInterval: '1 second', maximumInterval: '30 seconds' } as const;
const stateRetry = { maximumAttempts: 20, initialInterval: '1 second', maximumInterval: '30 seconds' } as const;

// Each proxy answers any name (a Proxy): one per activity group, so that a name is scheduled with its group's options.
const remote = {
  audit: proxyActivities<ReturnType<typeof createAuditActivities>>({
    startToCloseTimeout: '30 seconds',
    retry: auditRetry,
  }),
  safety: proxyActivities<ReturnType<typeof createSafetyActivities>>({
    startToCloseTimeout: '30 seconds',
    retry: stateRetry,
  }),
  silences: proxyActivities<ReturnType<typeof createSilenceActivities>>({
    startToCloseTimeout: '30 seconds',
    retry: stateRetry,
  }),
  approval: proxyActivities<ReturnType<typeof createApprovalActivities>>({
    startToCloseTimeout: '10 seconds',
    retry: { maximumAttempts: 3 },
  }),
};

/*
 * Local activities retry in the worker while the wait before the next attempt is under `localRetryThreshold`, and on a
 * durable timer beyond it (the SDK schedules the timer and the next attempt, counting attempts on): a blip of a few
 * seconds is retried within the workflow task, a long outage (a database down for minutes) waits on timers, as the
 * remote activities did, and ends the same way: after the last attempt the step fails and the healing with it
 * (`failHealing`). The retry policies are the remote activities' ones.
 */
const LOCAL_RETRY_THRESHOLD = '10 seconds';
const state = {
  startToCloseTimeout: '30 seconds',
  localRetryThreshold: LOCAL_RETRY_THRESHOLD,
  retry: stateRetry,
} as const;
const localOnes = {
  audit: proxyLocalActivities<ReturnType<typeof createAuditActivities>>({
    startToCloseTimeout: '30 seconds',
    localRetryThreshold: LOCAL_RETRY_THRESHOLD,
    retry: auditRetry,
  }),
  safety: proxyLocalActivities<ReturnType<typeof createSafetyActivities>>(state),
  silences: proxyLocalActivities<ReturnType<typeof createSilenceActivities>>(state),
  policy: proxyLocalActivities<PolicyActivities>({
    ...state,
    startToCloseTimeout: '10 seconds',
  }),
  gate: proxyLocalActivities<ReturnType<typeof createGateActivities>>(state),
  approval: proxyLocalActivities<ReturnType<typeof createApprovalActivities>>({
    startToCloseTimeout: '10 seconds',
    retry: { maximumAttempts: 3 },
  }),
};
const pick = () => (local() ? localOnes : remote);

type Safety = ReturnType<typeof createSafetyActivities>;
type Silences = ReturnType<typeof createSilenceActivities>;

/** One audit row, a remote activity (histories from before local activities). */
export const appendHealingLog = (entry: AuditEntry) => remote.audit.appendHealingLog(entry);
/** Consecutive audit rows of one run in one local activity. */
export const appendHealingLogs = (entries: KeyedAuditEntry[]) => localOnes.audit.appendHealingLogs(entries);
export const checkSafety = (input: Parameters<Safety['checkSafety']>[0]) => pick().safety.checkSafety(input);
export const reservePermit = (input: Parameters<Safety['reservePermit']>[0]) => pick().safety.reservePermit(input);
export const finishPermit = (input: Parameters<Safety['finishPermit']>[0]) => pick().safety.finishPermit(input);
export const activeSilence = (input: Parameters<Silences['activeSilence']>[0]) => pick().silences.activeSilence(input);
export const verifyApproval = (input: Parameters<ReturnType<typeof createApprovalActivities>['verifyApproval']>[0]) =>
  pick().approval.verifyApproval(input);
/** The checks right before an action in one local activity (activities/gate.ts): runs that take 'action-gate'. */
export const gateAction = (input: Parameters<ReturnType<typeof createGateActivities>['gateAction']>[0]) =>
  localOnes.gate.gateAction(input);
/** The healing worker's policy (local activity; see run.ts for when a healing reads it). */
export const currentPolicy = () => localOnes.policy.currentPolicy();

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
