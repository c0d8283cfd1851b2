/**
 * The one contract file shared by workflows, workers and every Temporal client (CLI, schedule setup, tests):
 * task queues, workflow-id builders, signals, queries, updates and search-attribute keys (DESIGN.md §6).
 * The CLI never spells a signal name as a string: it imports the definitions from here.
 */
import { defineSearchAttributeKey } from '@temporalio/common';
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import { sanitizeTargetPart } from '../core/ids';

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

export const approveSignal = defineSignal<[ApproveInput]>('approve');
export const rejectSignal = defineSignal<[RejectInput]>('reject');
export const anomalySeenSignal = defineSignal<[{ detectedAt: number; fingerprint: string }]>('anomalySeen');
export const decideUpdate = defineUpdate<DecideInput['decision'], [DecideInput]>('decide');
export const statusQuery = defineQuery<unknown>('status');

/** Search attributes of healing workflows (registered by `selfheal up` and the test harness). */
export const SearchAttr = {
  AnomalyType: defineSearchAttributeKey('AnomalyType', 'KEYWORD'),
  HealTarget: defineSearchAttributeKey('HealTarget', 'KEYWORD'),
  HealPhase: defineSearchAttributeKey('HealPhase', 'KEYWORD'),
  HealAction: defineSearchAttributeKey('HealAction', 'KEYWORD'),
  Severity: defineSearchAttributeKey('Severity', 'KEYWORD'),
  HealConfidence: defineSearchAttributeKey('HealConfidence', 'DOUBLE'),
} as const;
