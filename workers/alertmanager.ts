/**
 * POST /webhooks/alertmanager: what each alert of an Alertmanager notification does to the healing workflows. A firing
 * alert starts the healing of its type and target (the id, task queue and search attributes a detected anomaly
 * gets), or signals the run already open; a resolved one is recorded on the open run. Parsing and meaning are in
 * core/alertmanager.ts; this file only talks to Temporal.
 */
import {
  WorkflowExecutionAlreadyStartedError,
  WorkflowNotFoundError,
  type Client,
  type WorkflowExecutionDescription,
} from '@temporalio/client';
import { alertIntents, type AlertIntent, type AlertOccurrence, type AlertmanagerWebhook } from '../core/alertmanager';
import type { Anomaly } from '../core/types';
import {
  alertResolvedSignal,
  anomalySeenSignal,
  healingWorkflowId,
  SearchAttr,
  TaskQueue,
  type HealingInput,
  type MonitoringInput,
} from '../workflows/definitions';
import { healingWorkflow } from '../workflows/healing';

/** Memo key of a healing started by an alert: which occurrence of the alert started it. */
export const ALERT_MEMO = 'alertmanager';

/** What became of one alert, as the webhook answers it. */
export type AlertOutcome =
  | { fingerprint: string; workflowId: string; firing: 'started' | 'signalled' | 'already handled' }
  | { fingerprint: string; workflowId: string; resolved: 'recorded' | 'no open healing' }
  | { fingerprint: string; ignored: string };

export type WebhookAnswer =
  { status: 200; body: { receiver: string; alerts: AlertOutcome[] } } | { status: 422; body: { error: string } };

/** The healing's input for an alert's anomaly: the monitor's own policy, thresholds and containers. */
function healingInput(anomaly: Anomaly, monitoring: MonitoringInput): HealingInput {
  const containers = new Set(monitoring.containerNames);
  if (anomaly.type === 'unhealthy_container') containers.add(anomaly.target);
  return {
    anomaly,
    policy: monitoring.policy,
    thresholds: monitoring.thresholds,
    containers: [...containers].sort(),
    containerLabels: monitoring.containerLabels,
  };
}

const sameOccurrence = (d: WorkflowExecutionDescription, o: AlertOccurrence): boolean => {
  const m = d.memo?.[ALERT_MEMO] as Partial<AlertOccurrence> | undefined;
  return m?.fingerprint === o.fingerprint && m.startsAt === o.startsAt;
};

async function describe(client: Client, workflowId: string): Promise<WorkflowExecutionDescription | undefined> {
  try {
    return await client.workflow.getHandle(workflowId).describe();
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return undefined;
    throw err;
  }
}

async function onFiring(client: Client, monitoring: MonitoringInput, intent: Extract<AlertIntent, { kind: 'firing' }>) {
  const { workflowId, anomaly, occurrence } = intent;
  const outcome = (firing: 'started' | 'signalled' | 'already handled'): AlertOutcome => ({
    fingerprint: occurrence.fingerprint,
    workflowId,
    firing,
  });
  const signal = () =>
    client.workflow
      .getHandle(workflowId)
      .signal(anomalySeenSignal, { detectedAt: anomaly.detectedAt, fingerprint: anomaly.fingerprint });
  // Alertmanager repeats a firing alert (repeat_interval, and with every change of its group): the run this very
  // occurrence started, once closed, stays closed, as a lasting anomaly fires once for the monitor. No restart loop.
  const last = await describe(client, workflowId);
  if (last?.status.name === 'RUNNING') {
    await signal();
    return outcome('signalled');
  }
  if (last && sameOccurrence(last, occurrence)) return outcome('already handled');
  try {
    await client.workflow.start(healingWorkflow, {
      workflowId,
      taskQueue: TaskQueue.healing,
      args: [healingInput(anomaly, monitoring)],
      staticSummary: anomaly.summary,
      memo: { [ALERT_MEMO]: { fingerprint: occurrence.fingerprint, startsAt: occurrence.startsAt } },
      typedSearchAttributes: [
        { key: SearchAttr.AnomalyType, value: anomaly.type },
        { key: SearchAttr.HealTarget, value: anomaly.target },
        { key: SearchAttr.Severity, value: anomaly.severity },
        { key: SearchAttr.HealPhase, value: 'analyzing' },
      ],
    });
    return outcome('started');
  } catch (err) {
    // Started meanwhile (by a monitoring cycle, or another Alertmanager replica's copy of this notification).
    if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
  }
  await signal();
  return outcome('signalled');
}

async function onResolved(client: Client, intent: Extract<AlertIntent, { kind: 'resolved' }>): Promise<AlertOutcome> {
  const { workflowId, occurrence } = intent;
  try {
    await client.workflow.getHandle(workflowId).signal(alertResolvedSignal, occurrence);
    return { fingerprint: occurrence.fingerprint, workflowId, resolved: 'recorded' };
  } catch (err) {
    if (!(err instanceof WorkflowNotFoundError)) throw err;
    return { fingerprint: occurrence.fingerprint, workflowId, resolved: 'no open healing' };
  }
}

/**
 * Acts on a parsed notification: 422 and nothing done when one alert names an unknown type or a bad target; else
 * each alert in order. A Temporal error is thrown (the server answers 503 and Alertmanager retries the notification:
 * what was done already is not done twice, a started run is signalled and a recorded resolution recorded again).
 */
export async function handleAlertmanager(
  client: Client,
  monitoring: MonitoringInput,
  payload: AlertmanagerWebhook,
  now: number,
): Promise<WebhookAnswer> {
  const r = alertIntents(payload, healingWorkflowId, now);
  if (!r.ok) return { status: 422, body: { error: r.problem.error } };
  const alerts: AlertOutcome[] = [];
  for (const intent of r.intents) {
    if (intent.kind === 'ignored') alerts.push({ fingerprint: intent.fingerprint, ignored: intent.why });
    else if (intent.kind === 'firing') alerts.push(await onFiring(client, monitoring, intent));
    else alerts.push(await onResolved(client, intent));
  }
  return { status: 200, body: { receiver: payload.receiver, alerts } };
}
