import { ScheduleAlreadyRunning, ScheduleOverlapPolicy, type Client } from '@temporalio/client';
import { thresholdsFrom, type Config } from '../core/config';
import { MONITOR_SCHEDULE_ID, TaskQueue } from '../workflows/definitions';
import type { HealingPolicy } from '../workflows/healing';
import type { MonitoringInput } from '../workflows/monitoring';
import { monitoringCycleWorkflow } from '../workflows';

/** Temporal refuses catch-up windows under 10 s; a shorter interval gets the minimum. */
const MIN_CATCHUP_MS = 10_000;

/** Circuit breaker: this many restarts of one target within the window escalate instead. */
const BREAKER_RESTARTS = 3;
const BREAKER_WINDOW_SECONDS = 3600;

export function healingPolicy(config: Config): HealingPolicy {
  return {
    autoFix: config.AUTO_FIX_ENABLED,
    minConfidence: config.MIN_CONFIDENCE,
    allowlist: config.CONTAINER_ALLOWLIST,
    denylist: config.CONTAINER_DENYLIST,
    cooldownSeconds: config.RESTART_COOLDOWN,
    restartBackoffMaxSeconds: config.RESTART_BACKOFF_MAX,
    breakerRestarts: BREAKER_RESTARTS,
    breakerWindowSeconds: BREAKER_WINDOW_SECONDS,
    requeueCap: config.REQUEUE_CAP,
    approvalTimeoutSeconds: config.APPROVAL_TIMEOUT,
    verifyDelaySeconds: config.VERIFY_DELAY,
    maxActionsPerHour: config.MAX_ACTIONS_PER_HOUR,
    maxRateLimitWaitSeconds: config.RATE_LIMIT_MAX_WAIT,
    approvers: config.APPROVERS,
    llmTimeoutMs: config.LLM_TIMEOUT_MS,
    // Whether decisions must be signed; the secret itself never enters a workflow.
    signedApprovals: config.APPROVAL_SECRET !== undefined,
    silenceRecheckSeconds: config.SILENCE_RECHECK_INTERVAL,
  };
}

export function monitoringInput(config: Config): MonitoringInput {
  return {
    policy: healingPolicy(config),
    thresholds: thresholdsFrom(config),
    containerNames: config.HEALTH_TARGETS.map((t) => t.container),
    containerLabels: config.REDIS_KEY_PREFIX ? [`selfheal.prefix=${config.REDIS_KEY_PREFIX}`] : [],
  };
}

function scheduleParts(config: Config) {
  const everyMs = config.MONITOR_INTERVAL * 1000;
  return {
    spec: { intervals: [{ every: everyMs }] },
    action: {
      type: 'startWorkflow' as const,
      workflowType: monitoringCycleWorkflow,
      taskQueue: TaskQueue.monitor,
      args: [monitoringInput(config)] as [MonitoringInput],
      workflowId: `${MONITOR_SCHEDULE_ID}-cycle`,
      // A cycle that cannot finish in one interval is abandoned; the next one starts fresh.
      workflowExecutionTimeout: Math.max(everyMs * 5, 60_000),
    },
    policies: {
      overlap: ScheduleOverlapPolicy.SKIP,
      catchupWindow: Math.max(everyMs, MIN_CATCHUP_MS),
    },
  };
}

/**
 * Creates the Schedule `selfheal-monitor`, or updates its spec, action and policies to the current configuration.
 * An update keeps the Schedule's state, so an operator's pause (and its note) survives a restart.
 * Returns what it did.
 */
export async function ensureMonitorSchedule(client: Client, config: Config): Promise<'created' | 'updated'> {
  const parts = scheduleParts(config);
  try {
    await client.schedule.create({
      scheduleId: MONITOR_SCHEDULE_ID,
      ...parts,
      state: { note: 'created by selfheal' },
    });
    return 'created';
  } catch (err) {
    if (!(err instanceof ScheduleAlreadyRunning)) throw err;
  }
  await client.schedule.getHandle(MONITOR_SCHEDULE_ID).update((previous) => ({
    ...previous,
    spec: parts.spec,
    action: parts.action,
    policies: { ...previous.policies, ...parts.policies },
    state: previous.state,
  }));
  return 'updated';
}
