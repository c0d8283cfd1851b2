import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import {
  ParentClosePolicy,
  getExternalWorkflowHandle,
  log,
  patched,
  proxyActivities,
  startChild,
} from '@temporalio/workflow';
import { errorMessage } from '../core/errors';
import { withContainers, type Snapshot } from '../core/snapshot';
import type { Anomaly } from '../core/types';
import type { createDetectionActivities } from '../activities/detection';
import type { createDockerActivities } from '../activities/docker';
import type { createMetricsActivities } from '../activities/metrics';
import {
  anomalySeenSignal,
  healingWorkflowId,
  SearchAttr,
  TaskQueue,
  type CycleResult,
  type HealingInput,
  type MonitoringInput,
} from './definitions';
import { healingWorkflow } from './healing';

export type { CycleResult, MonitoringInput } from './definitions';

const { collectMetrics } = proxyActivities<ReturnType<typeof createMetricsActivities>>({
  startToCloseTimeout: '30 seconds',
  retry: { maximumAttempts: 2 },
});
const { detectAnomalies, spendGoneMarks } = proxyActivities<ReturnType<typeof createDetectionActivities>>({
  startToCloseTimeout: '30 seconds',
  retry: { maximumAttempts: 2 },
});
const { inspectContainers } = proxyActivities<ReturnType<typeof createDockerActivities>>({
  taskQueue: TaskQueue.actions,
  startToCloseTimeout: '15 seconds',
  // A cycle must not wait for an actions worker that is down: Docker state is then simply missing.
  scheduleToStartTimeout: '10 seconds',
  retry: { maximumAttempts: 1 },
});

function healingInput(anomaly: Anomaly, input: MonitoringInput, snapshot: Snapshot): HealingInput {
  const known = new Set([...input.containerNames, ...snapshot.containers.map((c) => c.name)]);
  return {
    anomaly,
    policy: input.policy,
    thresholds: input.thresholds,
    containers: [...known].sort(),
    containerLabels: input.containerLabels,
  };
}

/**
 * Marks the cycles that start their healings concurrently (all the start commands in one workflow task). Cycles
 * recorded before it started them one after the other, each start waiting for its own workflow task: 500 anomalies
 * fired at once cost 500 sequential round trips. Without the marker a history replays the old way.
 */
export const CONCURRENT_STARTS_PATCH = 'concurrent-child-starts';

/**
 * Marks the cycles that spend the `monitoring:gone` marks of the anomalies they fired again (`refired`) once their
 * healing started (`spendGoneMarks`, one activity, only when some anomaly fired again). Cycles recorded before it
 * had no such anomalies and scheduled no such activity.
 */
export const SPEND_GONE_MARKS_PATCH = 'spend-gone-marks';

/** A gone mark this old when its anomaly's run was found open: that run is not the one that was ending. */
export const STALE_GONE_MARK_MS = 60_000;

interface Starts {
  started: string[];
  signalled: string[];
}

function startHealing(anomaly: Anomaly, input: MonitoringInput, snapshot: Snapshot): Promise<unknown> {
  return startChild(healingWorkflow, {
    workflowId: healingWorkflowId(anomaly.type, anomaly.target),
    taskQueue: TaskQueue.healing,
    args: [healingInput(anomaly, input, snapshot)],
    parentClosePolicy: ParentClosePolicy.ABANDON,
    staticSummary: anomaly.summary,
    typedSearchAttributes: [
      { key: SearchAttr.AnomalyType, value: anomaly.type },
      { key: SearchAttr.HealTarget, value: anomaly.target },
      { key: SearchAttr.Severity, value: anomaly.severity },
      { key: SearchAttr.HealPhase, value: 'analyzing' },
    ],
  });
}

/**
 * It came back while the run that heals it is still open (an approval or a permit wait): tell that run. A lasting
 * anomaly fires once, so a closed run is left closed: no restart loops on a lasting fault (unless a healing's
 * verification after its action found it gone: then it fires again, see `refiredAfterGone`). True when signalled.
 */
async function signalOpenHealing(anomaly: Anomaly): Promise<boolean> {
  const workflowId = healingWorkflowId(anomaly.type, anomaly.target);
  try {
    await getExternalWorkflowHandle(workflowId).signal(anomalySeenSignal, {
      detectedAt: anomaly.detectedAt,
      fingerprint: anomaly.fingerprint,
    });
    return true;
  } catch {
    log.debug('no open healing workflow to signal', { workflowId });
    return false;
  }
}

/**
 * Starts issued together, at most this many per workflow task: each start command carries its healing's input (about
 * 0.7 KB), and a task of 500 starts took 5.9 s on a loaded 2-core machine, over half the 10 s workflow task timeout.
 */
export const STARTS_PER_TASK = 100;

/** The starts together (STARTS_PER_TASK per workflow task), then every signal to the runs already open together. */
async function startConcurrently(fired: Anomaly[], input: MonitoringInput, snapshot: Snapshot): Promise<Starts> {
  const outcomes: PromiseSettledResult<unknown>[] = [];
  for (let i = 0; i < fired.length; i += STARTS_PER_TASK) {
    const chunk = fired.slice(i, i + STARTS_PER_TASK);
    outcomes.push(...(await Promise.allSettled(chunk.map((anomaly) => startHealing(anomaly, input, snapshot)))));
  }
  const open: Anomaly[] = [];
  const started: string[] = [];
  outcomes.forEach((outcome, i) => {
    const anomaly = fired[i]!;
    if (outcome.status === 'fulfilled') started.push(healingWorkflowId(anomaly.type, anomaly.target));
    else if (outcome.reason instanceof WorkflowExecutionAlreadyStartedError) open.push(anomaly);
    else throw outcome.reason;
  });
  const signals = await Promise.all(open.map((anomaly) => signalOpenHealing(anomaly)));
  const signalled = open.filter((_, i) => signals[i]).map((a) => healingWorkflowId(a.type, a.target));
  return { started, signalled };
}

/** The cycles recorded before CONCURRENT_STARTS_PATCH: one start (and its signal) after the other. */
async function startOneByOne(fired: Anomaly[], input: MonitoringInput, snapshot: Snapshot): Promise<Starts> {
  const started: string[] = [];
  const signalled: string[] = [];
  for (const anomaly of fired) {
    const workflowId = healingWorkflowId(anomaly.type, anomaly.target);
    try {
      await startHealing(anomaly, input, snapshot);
      started.push(workflowId);
      continue;
    } catch (err) {
      if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
    }
    if (await signalOpenHealing(anomaly)) signalled.push(workflowId);
  }
  return { started, signalled };
}

/**
 * One monitoring cycle: collect, detect, then one healing workflow per anomaly that fired (or a signal to the
 * one already open for it). The healings of one cycle are started together, the signals to the open ones after them,
 * so that a storm of anomalies costs the cycle a round trip per STARTS_PER_TASK starts and one for the signals, not one
 * or two per anomaly. Started by the Schedule `selfheal-monitor`; short, so its history stays small.
 *
 * Only a firing is signalled, never a cycle in which an open anomaly merely lasts. Each signal is an event (and a
 * workflow task) in the healing's history, and a healing may stay open for hours (APPROVAL_TIMEOUT, rate-limit
 * timers): a signal per cycle grew its history with the cycle count, past Temporal's limits at short intervals. A
 * firing is the sighting that tells the healing something: the anomaly cleared and came back (noise control lets
 * that happen at most once per ANOMALY_FIRE_CYCLES + ANOMALY_CLEAR_CYCLES cycles), or a healing's verification after
 * its action found it gone and it is back (`refiredAfterGone`), so `status.seen` counts the occurrences of the
 * anomaly during the run. "Still there" needs no signal: the healing re-runs the detector itself
 * before a restart and when it verifies, and `selfheal status` shows what the latest cycle sees.
 */
export async function monitoringCycleWorkflow(input: MonitoringInput): Promise<CycleResult> {
  const startedAt = Date.now();
  const [snapshot, docker] = await Promise.all([
    collectMetrics(),
    inspectContainers({ names: input.containerNames, labels: input.containerLabels }).catch((err: unknown) => ({
      ok: false,
      error: errorMessage(err),
      containers: [],
    })),
  ]);
  const merged = withContainers(snapshot, docker);
  const result = await detectAnomalies({ snapshot: merged, thresholds: input.thresholds, cycleStartedAt: startedAt });

  const { started, signalled } =
    result.fired.length > 0 && patched(CONCURRENT_STARTS_PATCH)
      ? await startConcurrently(result.fired, input, merged)
      : await startOneByOne(result.fired, input, merged);
  // Fired again after a healing found it gone: the mark is spent once a new healing runs for it. One that found the
  // last run still open (ending) was only signalled; its mark stays, and the next cycle fires it again.
  if (result.refired && result.refired.length > 0 && patched(SPEND_GONE_MARKS_PATCH)) {
    const startedIds = new Set(started);
    const signalledIds = new Set(signalled);
    const byFingerprint = new Map(result.fired.map((a) => [a.fingerprint, a]));
    const now = Date.now();
    const spent = result.refired.filter((m) => {
      const a = byFingerprint.get(m.fingerprint);
      if (!a) return false;
      const id = healingWorkflowId(a.type, a.target);
      // A run signalled over a mark older than STALE_GONE_MARK_MS is not one that was ending: one of its own (started
      // by an alert, say) holds the id. It has been told; firing again every cycle would signal it every cycle.
      return startedIds.has(id) || (signalledIds.has(id) && now - m.goneAt > STALE_GONE_MARK_MS);
    });
    if (spent.length > 0) {
      // A mark left (the activity out of retries) fires the anomaly again next cycle: no reason to fail this one.
      await spendGoneMarks(spent).catch((err: unknown) =>
        log.warn('gone marks not spent', { error: errorMessage(err), marks: spent.length }),
      );
    }
  }
  return {
    at: merged.at,
    durationMs: Date.now() - startedAt,
    degraded: Object.entries(merged.sources)
      .filter(([, s]) => !s.ok)
      .map(([name]) => name),
    active: result.active.map((a) => a.fingerprint),
    started,
    signalled,
  };
}
