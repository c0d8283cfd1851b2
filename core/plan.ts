/**
 * A remediation plan: what the healing workflow proposes, what the safety policy judges, what a human approves
 * (by `id`), and what the actions worker executes. Plain JSON. The target always comes from the anomaly (or its
 * evidence), never from an LLM reply.
 */
import type { FallbackCause } from './fallback-cause';
import type { ActionType, AnomalyType } from './types';

/** Action-specific parameters, all derived from the anomaly's evidence by selfheal, never from the LLM. */
export interface PlanParams {
  /** restart_worker: the container to restart. */
  container?: string;
  /** requeue_documents, quarantine_document: the documents concerned. */
  documentIds?: number[];
  /** requeue_documents: the stage whose queue receives them. */
  stage?: string;
  /** clear_stale_locks: the exact locks observed (key suffix = document id, value token and owner). */
  locks?: { documentId: string; owner: string; token: string }[];
  /** remove_orphaned_entries: the exact queue entries observed. */
  entries?: { queue: string; id: string; count: number }[];
  /** Why, in one line (quarantine reason, escalation text). */
  reason?: string;
  /**
   * restart_worker of a container that died holding a document that killed a worker before: that document is
   * quarantined first, so the restarted worker does not take it and die again (the crash loop's cause).
   */
  quarantineFirst?: number[];
  /**
   * restart_worker of a worker that is hung behind a working health check (`unhealthy_container` found by its lack of
   * progress): its health cannot say it is fixed, so it is restarted while it looks healthy, as for a stall.
   */
  hung?: boolean;
}

export const PlanSource = { llm: 'llm', runbook: 'runbook' } as const;
export type PlanSource = (typeof PlanSource)[keyof typeof PlanSource];

export interface Plan {
  /** Stable id of this exact plan (hash of its content): approval is bound to it. */
  id: string;
  anomalyType: AnomalyType;
  action: ActionType;
  /** The anomaly's target. */
  target: string;
  params: PlanParams;
  /** Short explanation shown to the approver. */
  reasoning: string;
  /** Combined confidence 0..1 (model's figure, agreement with the runbook, strength of the evidence). */
  confidence: number;
  source: PlanSource;
  /** When `source` is runbook: why the LLM's plan was not used (down, timeout, invalid, disallowed...). */
  fallbackReason?: string;
  /** When `source` is runbook: the cause in one word (timeout, invalid_reply, unsafe_action, model_absent...). */
  fallbackCause?: FallbackCause;
  /** Position on the remediation ladder (0 = first remedy, then the next rung after a failed verification). */
  rung: number;
  /** s between the action and its verification, when the anomaly's runbook (RUNBOOKS_FILE) sets it; else VERIFY_DELAY. */
  verifyDelaySeconds?: number;
}

/**
 * Actions the LLM may choose among, per anomaly type (docs/ARCHITECTURE.md, Actions). The first listed is the runbook's first rung;
 * the order is the ladder (requeue, then restart, then escalate). `escalate_to_human` is always allowed.
 */
/**
 * Anomaly types a failing health check shows (an unhealthy container, the dead owner of stuck documents): for
 * them a container answering 200 means the problem is gone. For every other type a restart is decided by its
 * detector, not by health.
 */
export const HEALTH_VISIBLE_TYPES: readonly AnomalyType[] = ['unhealthy_container', 'stuck_documents'];

/**
 * Whether a healthy container means a restart of `plan` has nothing to do: for the HEALTH_VISIBLE_TYPES, except a
 * worker hung behind a working health check (`params.hung`), which its detector, not its health, must clear.
 */
export function healthDecides(plan: Pick<Plan, 'anomalyType' | 'params'>): boolean {
  return HEALTH_VISIBLE_TYPES.includes(plan.anomalyType) && plan.params.hung !== true;
}

export const ALLOWED_ACTIONS: Record<AnomalyType, readonly ActionType[]> = {
  stuck_documents: ['requeue_documents', 'restart_worker', 'escalate_to_human', 'no_action'],
  stale_locks: ['clear_stale_locks', 'escalate_to_human', 'no_action'],
  unhealthy_container: ['restart_worker', 'escalate_to_human', 'no_action'],
  stalled_queue: ['restart_worker', 'escalate_to_human', 'no_action'],
  processing_time_anomaly: ['restart_worker', 'escalate_to_human', 'no_action'],
  error_rate_spike: ['restart_worker', 'escalate_to_human', 'no_action'],
  lost_documents: ['requeue_documents', 'escalate_to_human', 'no_action'],
  orphaned_entries: ['remove_orphaned_entries', 'escalate_to_human', 'no_action'],
  poison_document: ['quarantine_document', 'escalate_to_human', 'no_action'],
  llm_unavailable: ['escalate_to_human'],
  monitoring_degraded: ['escalate_to_human'],
};
