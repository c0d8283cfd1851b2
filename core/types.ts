/**
 * Domain types shared by detectors, workflows and activities. Only JSON crosses Temporal: times are epoch ms,
 * enums are `as const` objects with a union type.
 */

export const AnomalyType = {
  stalled_queue: 'stalled_queue',
  error_rate_spike: 'error_rate_spike',
  processing_time_anomaly: 'processing_time_anomaly',
  unhealthy_container: 'unhealthy_container',
  stuck_documents: 'stuck_documents',
  stale_locks: 'stale_locks',
  llm_unavailable: 'llm_unavailable',
  monitoring_degraded: 'monitoring_degraded',
  lost_documents: 'lost_documents',
  orphaned_entries: 'orphaned_entries',
  poison_document: 'poison_document',
} as const;
export type AnomalyType = (typeof AnomalyType)[keyof typeof AnomalyType];

export const Severity = { info: 'info', warning: 'warning', critical: 'critical' } as const;
export type Severity = (typeof Severity)[keyof typeof Severity];

/** The closed set of remediation actions (docs/ARCHITECTURE.md, Actions). The LLM chooses among them, never the target. */
export const ActionType = {
  restart_worker: 'restart_worker',
  requeue_documents: 'requeue_documents',
  clear_stale_locks: 'clear_stale_locks',
  escalate_to_human: 'escalate_to_human',
  remove_orphaned_entries: 'remove_orphaned_entries',
  quarantine_document: 'quarantine_document',
  no_action: 'no_action',
} as const;
export type ActionType = (typeof ActionType)[keyof typeof ActionType];

/** Phases of a healing workflow (search attribute HealPhase). */
export const HealPhase = {
  analyzing: 'analyzing',
  checking: 'checking',
  rate_limited: 'rate_limited',
  awaiting_approval: 'awaiting_approval',
  /** A silence (maintenance window) holds the action: waiting on durable timers until it ends. */
  silenced: 'silenced',
  executing: 'executing',
  verifying: 'verifying',
  healed: 'healed',
  escalated: 'escalated',
  rejected: 'rejected',
  failed: 'failed',
} as const;
export type HealPhase = (typeof HealPhase)[keyof typeof HealPhase];

export interface Anomaly {
  type: AnomalyType;
  /** What is affected: a stage, a queue, a container name. Never chosen by the LLM. */
  target: string;
  severity: Severity;
  /** Stable identity of this occurrence (type + target + the evidence that matters). */
  fingerprint: string;
  /** One human line. */
  summary: string;
  /** JSON evidence (counts, ids, observed values). */
  evidence: Record<string, unknown>;
  /** Epoch ms. */
  detectedAt: number;
}
