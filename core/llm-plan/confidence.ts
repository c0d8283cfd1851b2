/** Confidence of an LLM plan: the model's own figure, agreement with the runbook, and the evidence's strength. */
import type { Anomaly, Severity } from '../types';

const SEVERITY_SCORE: Record<Severity, number> = { info: 0.3, warning: 0.6, critical: 1 };
const COUNT_FIELDS = ['count', 'consecutiveFailures', 'failed', 'queueDepth', 'totalStale', 'crashes', 'samples'];
const LIST_FIELDS = ['documentIds', 'locks', 'entries', 'deadOwners', 'containers'];

const clamp01 = (x: number): number => (Number.isFinite(x) ? Math.min(1, Math.max(0, x)) : 0);
const round3 = (x: number): number => Math.round(x * 1000) / 1000;

/**
 * How strongly the anomaly's evidence supports acting, 0..1: the mean of its severity (info 0.3, warning 0.6,
 * critical 1) and its volume, min(1, log10(1 + n)) where n is the largest count in the evidence (count,
 * consecutiveFailures, failed, queueDepth, ..., or the length of an id list): 1 item 0.3, 3 items 0.6, 9+ items 1;
 * 0.5 when the evidence has no count at all.
 */
export function evidenceStrength(anomaly: Anomaly): number {
  const e = anomaly.evidence;
  const counts = [
    ...COUNT_FIELDS.map((k) => e[k]).filter((v): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0),
    ...LIST_FIELDS.map((k) => e[k]).flatMap((v) => (Array.isArray(v) ? [v.length] : [])),
  ];
  const volume = counts.length === 0 ? 0.5 : Math.min(1, Math.log10(1 + Math.max(...counts)));
  return round3((SEVERITY_SCORE[anomaly.severity] + volume) / 2);
}

/**
 * Confidence of an LLM plan: 0.5 x model + 0.3 x agreement + 0.2 x evidence, rounded to 3 decimals, where model is
 * the reply's own figure clamped to 0..1 (NaN or infinite -> 0), agreement is 1 when the action is the one the
 * runbook picks at this rung and 0 otherwise, and evidence is `evidenceStrength` clamped to 0..1.
 * Consequence: a plan that disagrees with the runbook tops out at 0.7, under the default MIN_CONFIDENCE (0.8), so
 * it always waits for a human; an agreeing plan needs model x 0.5 + evidence x 0.2 >= 0.5 to pass it.
 */
export function combineConfidence(
  modelConfidence: number,
  agreesWithRunbook: boolean,
  evidenceStrength: number,
): number {
  return round3(0.5 * clamp01(modelConfidence) + 0.3 * (agreesWithRunbook ? 1 : 0) + 0.2 * clamp01(evidenceStrength));
}
