/**
 * The one contract file shared by workflows, workers and every Temporal client (CLI, schedule setup, tests): task
 * queues, workflow-id builders, every type that crosses the workflow boundary (the inputs, the policy, the `status`
 * answer, the cycle result), signals, queries, updates and search-attribute keys (docs/ARCHITECTURE.md).
 * The CLI never spells a signal name as a string: it imports the definitions from here.
 */
import { defineSearchAttributeKey } from '@temporalio/common';
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { Thresholds } from '../core/detectors';
import { sanitizeTargetPart } from '../core/ids';
import type { Plan } from '../core/plan';
import type { SafetyPolicy } from '../core/safety';
import type { ActionType, Anomaly, HealPhase } from '../core/types';

export const TaskQueue = {
  monitor: 'selfheal-monitor',
  healing: 'selfheal-healing',
  actions: 'selfheal-actions',
} as const;
export type TaskQueue = (typeof TaskQueue)[keyof typeof TaskQueue];

export const WorkflowType = {
  monitoringCycle: 'monitoringCycleWorkflow',
  healing: 'healingWorkflow',
} as const;

/** Id of the Schedule that runs one monitoring cycle every MONITOR_INTERVAL seconds. */
export const MONITOR_SCHEDULE_ID = 'selfheal-monitor';

/** `heal-<type>-<target>`: one open healing workflow per anomaly type and target. */
export function healingWorkflowId(type: string, target: string): string {
  return `heal-${type}-${sanitizeTargetPart(target)}`;
}

export interface ApproveInput {
  /** Who approves (checked against APPROVERS when set). */
  by: string;
  reason?: string;
  /** The plan reviewed: when given, a decision for another plan is ignored. */
  planId?: string;
  /** Hex HMAC-SHA256 of workflow id, plan id, decision and approver; required when APPROVAL_SECRET is set. */
  signature?: string;
}
export interface RejectInput {
  by: string;
  reason: string;
  planId?: string;
  signature?: string;
}
export interface DecideInput {
  decision: 'approve' | 'reject';
  by: string;
  reason?: string;
  /** The plan being approved: approval is bound to the exact plan shown. */
  planId?: string;
  /** Hex HMAC-SHA256 of workflow id, plan id, decision and approver; required when APPROVAL_SECRET is set. */
  signature?: string;
}

/** Everything a healing run needs from the configuration; it arrives as input, never from globals. */
export interface HealingPolicy extends SafetyPolicy {
  /** s to wait for a decision; no answer rejects. */
  approvalTimeoutSeconds: number;
  /** s between an action and its verification. */
  verifyDelaySeconds: number;
  /** The global budget of actions per rolling hour. */
  maxActionsPerHour: number;
  /** s a workflow may wait for a permit before it escalates instead. */
  maxRateLimitWaitSeconds: number;
  /** Names allowed to approve or reject; empty means anyone. */
  approvers: string[];
  /** LLM_TIMEOUT_MS. */
  llmTimeoutMs: number;
  /**
   * APPROVAL_SECRET is set: a decision counts only with a valid signature, checked by the healing worker's
   * `verifyApproval` activity (the secret is never in the workflow). Absent in older inputs: unsigned.
   */
  signedApprovals?: boolean;
  /** SILENCE_RECHECK_INTERVAL: s between re-checks of a silence holding a healing. Absent in older inputs: 60. */
  silenceRecheckSeconds?: number;
}

/** The input of `healingWorkflow`. */
export interface HealingInput {
  anomaly: Anomaly;
  /**
   * The policy when the healing was started. A healing applies the healing worker's current policy instead, read
   * when it decides and after each wait (workflows/healing/run.ts); histories from before that keep this one.
   */
  policy: HealingPolicy;
  /** Fixed for this healing: applied over the worker's current policy (a one-off run, a test). */
  policyOverrides?: Partial<HealingPolicy>;
  thresholds: Thresholds;
  /** Containers the pipeline has (for restart plans), and the labels that find them. */
  containers: string[];
  containerLabels: string[];
}

/** The input of `monitoringCycleWorkflow` (the Schedule's action). */
export interface MonitoringInput {
  thresholds: Thresholds;
  /** Containers named by HEALTH_TARGETS: inspected even without the pipeline label. */
  containerNames: string[];
  /** Extra label filters of the pipeline's containers (e.g. one pipeline among several on a host). */
  containerLabels: string[];
  /** Handed to every healing workflow this cycle starts. */
  policy: HealingPolicy;
}

/** The result of one monitoring cycle. */
export interface CycleResult {
  at: number;
  durationMs: number;
  degraded: string[];
  active: string[];
  started: string[];
  signalled: string[];
}

export interface Decision {
  decision: 'approve' | 'reject';
  by: string;
  reason?: string;
  planId: string;
  at: number;
  via: 'signal' | 'update' | 'timeout';
}

export interface ActionRecord {
  action: ActionType;
  planId: string;
  idempotencyKey: string;
  outcome: string;
  details?: Record<string, unknown>;
  at: number;
}

/** The answer of the `status` query (and the result of a healing). */
export interface HealingStatus {
  phase: HealPhase;
  anomaly: Anomaly;
  plan: Plan | null;
  decision: Decision | null;
  actions: ActionRecord[];
  verification: { at: number; healed: boolean; note: string } | null;
  history: { at: number; phase: HealPhase; note: string }[];
  /** Times the anomaly fired again (cleared and came back) while this run was open. */
  seen: number;
  /** Signals and updates that arrived when they could change nothing (late, duplicate, not an approver). */
  ignored: { at: number; what: string }[];
  /** The last alert of this type and target Alertmanager reported resolved while the run was open (absent: none). */
  resolved?: AlertResolved & { receivedAt: number };
}

/** An alert Alertmanager reports resolved (POST /webhooks/alertmanager): recorded on the open healing, nothing else. */
export interface AlertResolved {
  /** Alertmanager's fingerprint of the alert. */
  fingerprint: string;
  /** RFC 3339, as Alertmanager sent them. */
  startsAt: string;
  endsAt?: string;
}

export const approveSignal = defineSignal<[ApproveInput]>('approve');
export const rejectSignal = defineSignal<[RejectInput]>('reject');
export const anomalySeenSignal = defineSignal<[{ detectedAt: number; fingerprint: string }]>('anomalySeen');
export const alertResolvedSignal = defineSignal<[AlertResolved]>('alertResolved');
export const decideUpdate = defineUpdate<DecideInput['decision'], [DecideInput]>('decide');
export const statusQuery = defineQuery<HealingStatus>('status');

/** Search attributes of healing workflows (registered by `selfheal up` and the test harness). */
export const SearchAttr = {
  AnomalyType: defineSearchAttributeKey('AnomalyType', 'KEYWORD'),
  HealTarget: defineSearchAttributeKey('HealTarget', 'KEYWORD'),
  HealPhase: defineSearchAttributeKey('HealPhase', 'KEYWORD'),
  HealAction: defineSearchAttributeKey('HealAction', 'KEYWORD'),
  Severity: defineSearchAttributeKey('Severity', 'KEYWORD'),
  HealConfidence: defineSearchAttributeKey('HealConfidence', 'DOUBLE'),
} as const;
