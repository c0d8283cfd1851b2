/**
 * Alertmanager's webhook (payload version 4) as selfheal reads it: the schema, and what each alert means. A firing
 * alert labelled `selfheal_anomaly` (an anomaly type) and `selfheal_target` is an anomaly of that type on that target,
 * with the same fingerprint a detector would give it (so the healing's verification re-runs that detector); its
 * labels and annotations travel as evidence, sanitized and bounded. Pure: the caller passes `now`.
 */
import { z } from 'zod';
import { anomaly } from './detectors/common';
import { sanitizeForNotification } from './notify';
import { sanitizeUntrusted } from './redact';
import { AnomalyType, Severity, type Anomaly } from './types';

/** The labels that route an alert to a healing. */
export const ANOMALY_LABEL = 'selfheal_anomaly';
export const TARGET_LABEL = 'selfheal_target';

/** Alerts in one notification; Alertmanager's `max_alerts` (0 = all) is usually far below. */
const ALERTS_MAX = 1_000;
const SUMMARY_MAX = 300;
/** What a target may be: a container, stage or worker name, as the detectors name them. */
const TARGET_RE = /^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$/;

const stringMap = z.record(z.string(), z.string());

/** One alert of the notification (`alerts[]`). */
export const alertSchema = z.object({
  status: z.enum(['firing', 'resolved']),
  labels: stringMap,
  annotations: stringMap.default({}),
  /** RFC 3339. */
  startsAt: z.string(),
  /** RFC 3339; `0001-01-01T00:00:00Z` while firing. */
  endsAt: z.string().optional(),
  generatorURL: z.string().optional(),
  fingerprint: z.string().optional(),
});
export type AlertmanagerAlert = z.output<typeof alertSchema>;

/** The whole notification (webhook_config, payload version 4). Unknown fields are allowed and ignored. */
export const webhookSchema = z.object({
  version: z.literal('4', { error: 'expected version "4" (Alertmanager webhook payload)' }),
  groupKey: z.string(),
  truncatedAlerts: z.number().int().min(0).default(0),
  status: z.enum(['firing', 'resolved']),
  receiver: z.string(),
  groupLabels: stringMap.default({}),
  commonLabels: stringMap.default({}),
  commonAnnotations: stringMap.default({}),
  externalURL: z.string().default(''),
  alerts: z.array(alertSchema).max(ALERTS_MAX),
});
export type AlertmanagerWebhook = z.output<typeof webhookSchema>;

/** A parse that never throws: the payload, or one line saying what is wrong with it. */
export function parseWebhook(body: unknown): { ok: true; value: AlertmanagerWebhook } | { ok: false; error: string } {
  const r = webhookSchema.safeParse(body);
  if (r.success) return { ok: true, value: r.data };
  const issue = r.error.issues[0]!;
  const where = issue.path.length > 0 ? issue.path.join('.') : 'body';
  return { ok: false, error: `${where}: ${issue.message}`.replace(/\s+/g, ' ').slice(0, 300) };
}

/** What to do with one alert. */
export type AlertIntent =
  | {
      kind: 'firing';
      workflowId: string;
      anomaly: Anomaly;
      /** Identity of this occurrence of the alert: Alertmanager's fingerprint and its start. */
      occurrence: AlertOccurrence;
    }
  | {
      kind: 'resolved';
      workflowId: string;
      occurrence: AlertOccurrence & { endsAt?: string };
      anomalyType: AnomalyType;
      target: string;
    }
  /** Not for selfheal: neither routing label. */
  | { kind: 'ignored'; fingerprint: string; why: string };

export interface AlertOccurrence {
  fingerprint: string;
  startsAt: string;
}

/** Why the notification cannot be acted on as a whole (an unknown type, a bad target): answered 422. */
export interface AlertProblem {
  fingerprint: string;
  error: string;
}

const isType = (v: string): v is AnomalyType => Object.hasOwn(AnomalyType, v);
const isSeverity = (v: string): v is Severity => Object.hasOwn(Severity, v);

/**
 * What each alert of a notification asks for, or the first alert that cannot be understood. All or nothing: a
 * notification with one bad alert starts nothing, so fixing the rule and re-sending cannot double-start the rest.
 * `workflowIdOf` is `healingWorkflowId` (workflows/definitions.ts), passed in to keep this layer pure.
 */
export function alertIntents(
  payload: AlertmanagerWebhook,
  workflowIdOf: (type: string, target: string) => string,
  now: number,
): { ok: true; intents: AlertIntent[] } | { ok: false; problem: AlertProblem } {
  const intents: AlertIntent[] = [];
  for (const [i, alert] of payload.alerts.entries()) {
    const fingerprint = alert.fingerprint ?? `alerts.${i}`;
    const type = alert.labels[ANOMALY_LABEL]?.trim();
    const target = alert.labels[TARGET_LABEL]?.trim();
    if (!type && !target) {
      intents.push({ kind: 'ignored', fingerprint, why: `no ${ANOMALY_LABEL} or ${TARGET_LABEL} label` });
      continue;
    }
    const bad = (error: string) => ({
      ok: false as const,
      problem: { fingerprint, error: `alert ${fingerprint}: ${error}` },
    });
    if (!type) return bad(`${TARGET_LABEL} without ${ANOMALY_LABEL}`);
    if (!isType(type)) return bad(`unknown anomaly type ${JSON.stringify(sanitizeUntrusted(type, 60))}`);
    if (!target) return bad(`${ANOMALY_LABEL} without ${TARGET_LABEL}`);
    if (!TARGET_RE.test(target)) {
      return bad(`${TARGET_LABEL} must be a name of [A-Za-z0-9_.:@-], at most 128 characters`);
    }
    const occurrence = {
      fingerprint: sanitizeUntrusted(fingerprint, 64),
      startsAt: sanitizeUntrusted(alert.startsAt, 64),
    };
    const workflowId = workflowIdOf(type, target);
    if (alert.status === 'resolved') {
      const endsAt = alert.endsAt ? { endsAt: sanitizeUntrusted(alert.endsAt, 64) } : {};
      intents.push({
        kind: 'resolved',
        workflowId,
        occurrence: { ...occurrence, ...endsAt },
        anomalyType: type,
        target,
      });
      continue;
    }
    intents.push({ kind: 'firing', workflowId, occurrence, anomaly: alertAnomaly(payload, alert, type, target, now) });
  }
  return { ok: true, intents };
}

/** The anomaly a firing alert stands for. */
export function alertAnomaly(
  payload: Pick<AlertmanagerWebhook, 'externalURL' | 'receiver'>,
  alert: AlertmanagerAlert,
  type: AnomalyType,
  target: string,
  now: number,
): Anomaly {
  const severityLabel = alert.labels.severity?.trim().toLowerCase() ?? '';
  const severity = isSeverity(severityLabel) ? severityLabel : Severity.warning;
  const name = alert.labels.alertname ?? 'alert';
  const text = alert.annotations.summary ?? alert.annotations.description ?? `${name} fired in Alertmanager`;
  const evidence = sanitizeForNotification({
    source: 'alertmanager',
    alertname: name,
    labels: alert.labels,
    annotations: alert.annotations,
    startsAt: alert.startsAt,
    generatorURL: alert.generatorURL ?? null,
    fingerprint: alert.fingerprint ?? null,
    receiver: payload.receiver,
    externalURL: payload.externalURL || null,
  }) as Record<string, unknown>;
  return anomaly(type, target, severity, sanitizeUntrusted(text, SUMMARY_MAX), evidence, now);
}
