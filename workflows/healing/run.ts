/**
 * One healing run's state and the steps every phase uses: the `status` the query answers, entering a phase (search
 * attributes and the Web UI's markdown details), the audit, finishing and escalating.
 */
import {
  log,
  patched,
  setCurrentDetails,
  upsertSearchAttributes,
  workflowInfo,
  type WorkflowInfo,
} from '@temporalio/workflow';
import { planSourceLabel } from '../../core/fallback-cause';
import type { Plan } from '../../core/plan';
import type { Anomaly, HealPhase } from '../../core/types';
import type { AuditEntry } from '../../activities/audit';
import { SearchAttr, type Decision, type HealingInput, type HealingPolicy, type HealingStatus } from '../definitions';
import { actions, appendHealingLog, appendHealingLogs, currentPolicy, local } from './proxies';

export type Finish = 'healed' | 'escalated' | 'rejected' | 'failed';

/**
 * The changes of the healing's command sequence that histories from before them must replay without. Each was a
 * `patched()` call where the change happens; a run that starts now reads them all at its start (`since`).
 */
export type HealingPatch =
  | 'llm-evidence'
  | 'live-policy'
  | 'silences'
  | 'silence-approval'
  | 'silence-before-execute'
  | 'poison-first'
  | LaterPatch;

/**
 * Changes made after PATCHES_AT_START: each its own marker, read at the run's start next to it (a run that took
 * PATCHES_AT_START before the change must replay without it).
 * - `action-gate`: the checks right before an action in one local activity (activities/gate.ts).
 */
const LATER_PATCHES = ['action-gate'] as const;
type LaterPatch = (typeof LATER_PATCHES)[number];

/**
 * The marker of a run that takes every change in `HealingPatch` (a run started by this code).
 *
 * Why at the start: replaying, `patched()` answers true only for a marker the SDK has already seen, and it sees a
 * workflow task's markers when it replays that task. A local activity can end in one workflow task while the code
 * after it ran in the next (seen in runs queried while their first tasks ran: the marker in task 1, the code after it
 * in task 2); replayed, that code runs within task 1, before the next task's markers are known, so a `patched()`
 * there answers false where the first run took the change: nondeterminism, the run stuck after a worker restart.
 * Read in the first activation, before any local activity, the answer is the same on every replay. A change made
 * after this one: its own `patched()` call next to this one, its answer kept on the run.
 */
export const PATCHES_AT_START = 'patches-at-start';

export interface HealingRun {
  input: HealingInput;
  anomaly: Anomaly;
  policy: HealingPolicy;
  info: WorkflowInfo;
  status: HealingStatus;
  /** Whether this run takes a change: always for a run started by this code, as recorded for older histories. */
  since(patch: HealingPatch): boolean;
  /** The decision that applies to the current plan (a new plan needs a new decision). */
  pending: Decision | null;
  /** Writes an audit row (with the rows deferred before it, in one local activity). */
  audit(entry: Omit<AuditEntry, 'anomalyType' | 'target'>): Promise<unknown>;
  /**
   * An audit row the next `audit` writes along with its own (one call for both): only where the next step is
   * certainly that audit (a decision to reject, then the end). Histories from before write it at once.
   */
  deferAudit(entry: Omit<AuditEntry, 'anomalyType' | 'target'>): Promise<unknown>;
  /**
   * The policy in force: the healing worker's, read again when the healing has waited since it last read it (and at
   * the first decision), so that a policy changed meanwhile applies. Histories from before keep the input's.
   */
  readPolicy(): Promise<HealingPolicy>;
  /** The healing waited (a timer, a decision): the next `readPolicy` reads the worker's policy again. */
  waited(): void;
  enter(phase: HealPhase, note: string): void;
  finish(phase: Finish, note: string, extra?: Partial<AuditEntry>): Promise<HealingStatus>;
  escalate(why: string): Promise<HealingStatus>;
  /** Adds a line to `status.ignored` (bounded: a flood of late signals must not grow the query answer). */
  ignore(what: string): void;
}

/** An escalation plan: the runbook's, at the current rung. */
function escalationPlan(run: HealingRun, suffix: string, why: string): Plan {
  return {
    id: `${run.status.plan?.id ?? 'none'}-${suffix}`,
    anomalyType: run.anomaly.type,
    action: 'escalate_to_human',
    target: run.anomaly.target,
    params: { reason: why },
    reasoning: why,
    confidence: 1,
    source: 'runbook',
    rung: run.status.plan?.rung ?? 0,
  };
}

export function createHealingRun(input: HealingInput): HealingRun {
  const { anomaly, policy } = input;
  const info = workflowInfo();
  // First, before any local activity (see PATCHES_AT_START).
  const current = patched(PATCHES_AT_START);
  const later = new Map<HealingPatch, boolean>(LATER_PATCHES.map((p) => [p, patched(p)]));
  const status: HealingStatus = {
    phase: 'analyzing',
    anomaly,
    plan: null,
    decision: null,
    actions: [],
    verification: null,
    history: [],
    seen: 1,
    ignored: [],
  };
  // Audit rows are named within the run by their order (local activities: see appendHealingLogs).
  let auditSeq = 0;
  let deferred: AuditEntry[] = [];
  let policyStale = true;
  const row = (entry: Omit<AuditEntry, 'anomalyType' | 'target'>): AuditEntry => ({
    anomalyType: anomaly.type,
    target: anomaly.target,
    ...entry,
  });
  const run: HealingRun = {
    input,
    anomaly,
    policy,
    info,
    status,
    since: (patch) => later.get(patch) ?? (current || patched(patch)),
    pending: null,
    async audit(entry) {
      if (!local()) return appendHealingLog(row(entry));
      const held = deferred;
      deferred = [];
      try {
        const ids = await appendHealingLogs([...held, row(entry)].map((e) => ({ ...e, key: `audit-${++auditSeq}` })));
        return ids[ids.length - 1];
      } catch (err) {
        // Nothing of the call was written (one transaction): the rows it carried along go with the next write (the
        // failure's own row, when the retries ran out).
        deferred = [...held, ...deferred];
        throw err;
      }
    },
    async deferAudit(entry) {
      if (!local()) return appendHealingLog(row(entry));
      deferred.push(row(entry));
      return undefined;
    },
    async readPolicy() {
      if (policyStale && run.since('live-policy')) {
        run.policy = { ...input.policy, ...(await currentPolicy()), ...input.policyOverrides };
        policyStale = false;
      }
      return run.policy;
    },
    waited() {
      policyStale = true;
    },
    enter(phase, note) {
      status.phase = phase;
      status.history.push({ at: Date.now(), phase, note });
      upsertSearchAttributes([
        { key: SearchAttr.HealPhase, value: phase },
        { key: SearchAttr.HealAction, value: status.plan?.action ?? 'none' },
        ...(status.plan ? [{ key: SearchAttr.HealConfidence, value: status.plan.confidence }] : []),
      ]);
      const plan = status.plan;
      setCurrentDetails(
        [
          `**${anomaly.type}** on \`${anomaly.target}\` (${anomaly.severity}): ${anomaly.summary}`,
          plan
            ? `Plan \`${plan.id}\`: **${plan.action}** (decided by ${planSourceLabel(plan)}, confidence ${plan.confidence.toFixed(2)}) ${plan.reasoning}`
            : '',
          '',
          ...status.history.map((h) => `- ${new Date(h.at).toISOString().slice(11, 19)} **${h.phase}** ${h.note}`),
        ]
          .filter((l, i) => l !== '' || i === 2)
          .join('\n'),
      );
    },
    async finish(phase, note, extra = {}) {
      run.enter(phase, note);
      await run.audit({ step: phase, action: status.plan?.action, outcome: note, decidedBy: 'policy', ...extra });
      return status;
    },
    async escalate(why) {
      const plan = escalationPlan(run, 'escalation', why);
      const key = `${info.workflowId}:${info.runId}:escalate`;
      const r = await actions.escalateToHuman({ plan, idempotencyKey: key });
      status.actions.push({
        action: 'escalate_to_human',
        planId: plan.id,
        idempotencyKey: key,
        outcome: r.outcome,
        at: Date.now(),
      });
      return run.finish('escalated', why, { action: 'escalate_to_human', params: { reason: why } });
    },
    ignore(what) {
      if (status.ignored.length < 50) status.ignored.push({ at: Date.now(), what });
    },
  };
  return run;
}

/** After an activity ran out of retries: the failure is audited and a human is told; a run never ends silently. */
export async function failHealing(run: HealingRun, message: string): Promise<void> {
  run.enter('failed', `healing failed: ${message}`);
  await run.audit({ step: 'failed', action: run.status.plan?.action, error: message, decidedBy: 'policy' });
  try {
    await actions.escalateToHuman({
      plan: escalationPlan(run, 'failure', `healing failed: ${message}`),
      idempotencyKey: `${run.info.workflowId}:${run.info.runId}:failure`,
    });
  } catch {
    log.error('escalation after a failure could not be sent', { workflowId: run.info.workflowId });
  }
}
