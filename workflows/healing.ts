import {
  ApplicationFailure,
  condition,
  log,
  patched,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  sleep,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { Thresholds } from '../core/detectors';
import { EVIDENCE_SKIPPED_TYPES, type AnalysisEvidence } from '../core/evidence';
import { classifyFallback, planSourceLabel } from '../core/fallback-cause';
import { HEALTH_VISIBLE_TYPES, type Plan } from '../core/plan';
import type { Snapshot } from '../core/snapshot';
import type { ActionType, Anomaly, HealPhase } from '../core/types';
import type { createActionActivities } from '../activities/actions';
import type { createAnalysisActivities } from '../activities/analysis';
import type { createApprovalActivities } from '../activities/approval';
import type { AuditEntry, createAuditActivities } from '../activities/audit';
import type { createDetectionActivities } from '../activities/detection';
import type { createDockerActivities } from '../activities/docker';
import type { createEvidenceActivities } from '../activities/evidence';
import type { createMetricsActivities } from '../activities/metrics';
import type { createSafetyActivities, SafetyPolicy } from '../activities/safety';
import {
  anomalySeenSignal,
  approveSignal,
  decideUpdate,
  rejectSignal,
  SearchAttr,
  statusQuery,
  TaskQueue,
  type DecideInput,
} from './definitions';

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
}

export interface HealingInput {
  anomaly: Anomaly;
  policy: HealingPolicy;
  thresholds: Thresholds;
  /** Containers the pipeline has (for restart plans), and the labels that find them. */
  containers: string[];
  containerLabels: string[];
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
}

const WINDOW_MS = 3_600_000;

const { appendHealingLog } = proxyActivities<ReturnType<typeof createAuditActivities>>({
  startToCloseTimeout: '30 seconds',
  // The audit must be written, even after a long database outage: retry for a long while, never forever.
  retry: { maximumAttempts: 200, initialInterval: '1 second', maximumInterval: '30 seconds' },
});
const { checkSafety, reservePermit, finishPermit } = proxyActivities<ReturnType<typeof createSafetyActivities>>({
  startToCloseTimeout: '30 seconds',
  retry: { maximumAttempts: 20, initialInterval: '1 second', maximumInterval: '30 seconds' },
});
const { collectMetrics } = proxyActivities<ReturnType<typeof createMetricsActivities>>({
  taskQueue: TaskQueue.monitor,
  startToCloseTimeout: '30 seconds',
  retry: { maximumAttempts: 5 },
});
const { recheckAnomaly } = proxyActivities<ReturnType<typeof createDetectionActivities>>({
  taskQueue: TaskQueue.monitor,
  startToCloseTimeout: '30 seconds',
  retry: { maximumAttempts: 5 },
});
const { inspectContainers } = proxyActivities<ReturnType<typeof createDockerActivities>>({
  taskQueue: TaskQueue.actions,
  startToCloseTimeout: '15 seconds',
  retry: { maximumAttempts: 3 },
});
/**
 * Evidence for the analysis (document errors, container log tail) from the actions worker. Bounded end to end: a
 * missing actions worker costs 30 s, then the analysis goes on without it.
 */
const { gatherEvidence } = proxyActivities<ReturnType<typeof createEvidenceActivities>>({
  taskQueue: TaskQueue.actions,
  startToCloseTimeout: '15 seconds',
  scheduleToCloseTimeout: '30 seconds',
  retry: { maximumAttempts: 2 },
});
const actions = proxyActivities<ReturnType<typeof createActionActivities>>({
  taskQueue: TaskQueue.actions,
  startToCloseTimeout: '2 minutes',
  retry: { maximumAttempts: 5, initialInterval: '2 seconds', maximumInterval: '30 seconds' },
});

const { verifyApproval } = proxyActivities<ReturnType<typeof createApprovalActivities>>({
  startToCloseTimeout: '10 seconds',
  retry: { maximumAttempts: 3 },
});

/** Approval notices: a few quick tries (the webhook retries inside), then the wait goes on without one. */
const notices = proxyActivities<ReturnType<typeof createActionActivities>>({
  taskQueue: TaskQueue.actions,
  startToCloseTimeout: '1 minute',
  retry: { maximumAttempts: 3, initialInterval: '2 seconds' },
});

/** Restarts heartbeat throughout: a worker that dies mid-restart is noticed in 30 s, not at the 2-minute timeout. */
const restarts = proxyActivities<ReturnType<typeof createActionActivities>>({
  taskQueue: TaskQueue.actions,
  startToCloseTimeout: '2 minutes',
  heartbeatTimeout: '30 seconds',
  retry: { maximumAttempts: 5, initialInterval: '2 seconds', maximumInterval: '30 seconds' },
});

function analysisProxy(timeoutMs: number) {
  return proxyActivities<ReturnType<typeof createAnalysisActivities>>({
    // The LLM timeout is enforced inside the activity; this bounds a stuck worker.
    startToCloseTimeout: timeoutMs + 30_000,
    retry: { maximumAttempts: 3 },
  });
}

/** The activity that carries out an action; escalation too is an action of the actions worker. */
function runAction(plan: Plan, idempotencyKey: string) {
  const input = { plan, idempotencyKey };
  switch (plan.action) {
    case 'restart_worker':
      return restarts.restartWorker(input);
    case 'requeue_documents':
      return actions.requeueDocuments(input);
    case 'clear_stale_locks':
      return actions.clearStaleLocks(input);
    case 'remove_orphaned_entries':
      return actions.removeOrphanedEntries(input);
    case 'quarantine_document':
      return actions.quarantineDocument(input);
    case 'escalate_to_human':
      return actions.escalateToHuman(input);
    case 'no_action':
      return Promise.resolve({ action: 'no_action', outcome: 'nothing_to_do', details: {} });
  }
}

/**
 * Healing of one anomaly (DESIGN.md §1): analyze, check the policy, wait for a permit, wait for approval when the
 * policy says so, act through the actions worker, verify, and take the next rung when the fix did not work. Every
 * step is written to healing_log; the phase, the action and a markdown timeline are visible in the Web UI.
 */
export async function healingWorkflow(input: HealingInput): Promise<HealingStatus> {
  const { anomaly, policy } = input;
  const info = workflowInfo();
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
  /** The decision that applies to the current plan (a new plan needs a new decision). */
  let pending: Decision | null = null;

  const audit = (entry: Omit<AuditEntry, 'anomalyType' | 'target'>) =>
    appendHealingLog({ anomalyType: anomaly.type, target: anomaly.target, ...entry });

  const enter = (phase: HealPhase, note: string) => {
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
  };

  const approverError = (by: string): string | undefined => {
    if (!by || !by.trim()) return 'by must name who decides';
    if (policy.approvers.length > 0 && !policy.approvers.includes(by)) return `${by} is not in APPROVERS`;
    return undefined;
  };

  const decide = (d: Omit<Decision, 'at' | 'planId'> & { planId?: string }): string | undefined => {
    const problem =
      status.phase !== 'awaiting_approval' || !status.plan
        ? `nothing awaits approval (phase ${status.phase})`
        : pending
          ? `already decided: ${pending.decision} by ${pending.by}`
          : d.planId !== undefined && d.planId !== status.plan.id
            ? `plan ${d.planId} is not the current plan ${status.plan.id}`
            : approverError(d.by);
    if (problem) {
      // Bounded: a flood of late signals must not grow the query result without end.
      if (status.ignored.length < 50) {
        status.ignored.push({ at: Date.now(), what: `${d.via} ${d.decision} by ${d.by || '(nobody)'}: ${problem}` });
      }
      return problem;
    }
    pending = { ...d, planId: status.plan!.id, at: Date.now() };
    return undefined;
  };

  setHandler(statusQuery, () => status);
  setHandler(anomalySeenSignal, () => {
    status.seen += 1;
  });
  /**
   * A decision that must be signed: the usual checks, then the signature, verified by an activity (the secret stays
   * on the worker). A refused signature is listed under `ignored` and audited; the decision changes nothing.
   */
  const decideSigned = async (
    d: Omit<Decision, 'at' | 'planId'> & { planId?: string },
    signature: string | undefined,
  ): Promise<string | undefined> => {
    const planId = status.plan?.id;
    if (status.phase !== 'awaiting_approval' || !planId || pending) return decide(d);
    const check = await verifyApproval({ planId: d.planId ?? planId, decision: d.decision, by: d.by, signature });
    if (!check.valid) {
      const why = `signature refused: ${check.why ?? 'invalid'}`;
      if (status.ignored.length < 50) {
        status.ignored.push({ at: Date.now(), what: `${d.via} ${d.decision} by ${d.by || '(nobody)'}: ${why}` });
      }
      await audit({
        step: 'refused',
        action: status.plan?.action,
        params: { planId, decision: d.decision, via: d.via },
        decidedBy: d.by || '(nobody)',
        outcome: why,
      });
      return why;
    }
    return decide(d);
  };

  setHandler(approveSignal, ({ by, reason, planId, signature }) => {
    const d = { decision: 'approve' as const, by, reason, planId, via: 'signal' as const };
    if (policy.signedApprovals) void decideSigned(d, signature);
    else decide(d);
  });
  setHandler(rejectSignal, ({ by, reason, planId, signature }) => {
    const d = { decision: 'reject' as const, by, reason, planId, via: 'signal' as const };
    if (policy.signedApprovals) void decideSigned(d, signature);
    else decide(d);
  });
  setHandler(
    decideUpdate,
    (d: DecideInput) => {
      const decision = { decision: d.decision, by: d.by, reason: d.reason, planId: d.planId, via: 'update' as const };
      if (policy.signedApprovals) {
        return decideSigned(decision, d.signature).then((problem) => {
          if (problem) throw ApplicationFailure.nonRetryable(problem, 'decision_refused');
          return pending!.decision;
        });
      }
      decide(decision);
      return pending!.decision;
    },
    {
      validator: (d: DecideInput) => {
        if (d.decision !== 'approve' && d.decision !== 'reject')
          throw new Error(`unknown decision: ${String(d.decision)}`);
        const who = approverError(d.by);
        if (who) throw new Error(who);
        if (status.phase !== 'awaiting_approval' || !status.plan) {
          throw new Error(`nothing awaits approval (phase ${status.phase})`);
        }
        if (pending) throw new Error(`already decided: ${pending.decision} by ${pending.by}`);
        if (d.planId !== undefined && d.planId !== status.plan.id) {
          throw new Error(`plan ${d.planId} is not the current plan ${status.plan.id}`);
        }
        if (policy.signedApprovals && !d.signature) {
          throw new Error('a signed decision is required (APPROVAL_SECRET is set): use selfheal approve or reject');
        }
      },
    },
  );

  const finish = async (
    phase: 'healed' | 'escalated' | 'rejected' | 'failed',
    note: string,
    extra: Partial<AuditEntry> = {},
  ) => {
    enter(phase, note);
    await audit({ step: phase, action: status.plan?.action, outcome: note, decidedBy: 'policy', ...extra });
    return status;
  };

  /**
   * The policy's verdict, waiting while it says `wait` (another restart of the stage is in flight) on durable timers
   * that back off from 5 s to 60 s, up to RATE_LIMIT_MAX_WAIT; past that the verdict is an escalation. The first wait
   * is audited (`rate_limited`), not every check.
   */
  const checkSafetyWaiting = async (args: { plan: Plan; ownPermitKey?: string }) => {
    const since = Date.now();
    let pauseMs = 5_000;
    let waited = false;
    for (;;) {
      const r = await checkSafety({ ...args, policy, workflowId: info.workflowId, now: Date.now() });
      if (r.verdict.decision !== 'wait') return r;
      const why = r.verdict.reasons.join('; ');
      if (Date.now() - since + pauseMs > policy.maxRateLimitWaitSeconds * 1000) {
        return {
          ...r,
          verdict: {
            ...r.verdict,
            decision: 'escalate' as const,
            reasons: [...r.verdict.reasons, `still so after ${Math.round((Date.now() - since) / 1000)} s`],
          },
        };
      }
      if (!waited) {
        waited = true;
        enter('rate_limited', `waiting: ${why}`);
        await audit({
          step: 'rate_limited',
          action: args.plan.action,
          params: { planId: args.plan.id, reasons: r.verdict.reasons },
          decidedBy: 'policy',
          outcome: 'wait',
        });
      }
      await sleep(pauseMs);
      pauseMs = Math.min(pauseMs * 2, 60_000);
    }
  };

  const escalate = async (why: string): Promise<HealingStatus> => {
    const plan: Plan = {
      id: `${status.plan?.id ?? 'none'}-escalation`,
      anomalyType: anomaly.type,
      action: 'escalate_to_human',
      target: anomaly.target,
      params: { reason: why },
      reasoning: why,
      confidence: 1,
      source: 'runbook',
      rung: status.plan?.rung ?? 0,
    };
    const key = `${info.workflowId}:${info.runId}:escalate`;
    const r = await actions.escalateToHuman({ plan, idempotencyKey: key });
    status.actions.push({
      action: 'escalate_to_human',
      planId: plan.id,
      idempotencyKey: key,
      outcome: r.outcome,
      at: Date.now(),
    });
    return finish('escalated', why, { action: 'escalate_to_human', params: { reason: why } });
  };

  await audit({
    step: 'detected',
    params: { summary: anomaly.summary, severity: anomaly.severity, evidence: anomaly.evidence },
  });

  const { analyzeAnomaly } = analysisProxy(policy.llmTimeoutMs);

  const heal = async (): Promise<HealingStatus> => {
    // The next rung continues after the remedy actually tried (the runbook may skip a rung it cannot apply).
    for (let rung = 0; ; rung = (status.plan?.rung ?? rung) + 1) {
      // 1. Analysis
      enter('analyzing', rung === 0 ? anomaly.summary : `the fix did not work: next rung (${rung})`);
      // Evidence an SRE would read (recent document errors, the container's last log lines), when it can be had.
      let evidence: AnalysisEvidence | undefined;
      if (!EVIDENCE_SKIPPED_TYPES.includes(anomaly.type) && patched('llm-evidence')) {
        try {
          evidence = await gatherEvidence({ anomaly, containers: input.containers });
        } catch (err) {
          log.warn('evidence not gathered', { error: err instanceof Error ? err.message : String(err) });
        }
      }
      const analysis = await analyzeAnomaly({
        anomaly,
        rung,
        context: { containers: input.containers },
        ...(evidence ? { evidence } : {}),
      });
      const plan = analysis.plan;
      status.plan = plan;
      pending = null;
      status.decision = null;
      await audit({
        step: 'proposed',
        action: plan.action,
        params: {
          planId: plan.id,
          rung,
          ...plan.params,
          reasoning: plan.reasoning,
          llm: analysis.llm,
          ...(plan.fallbackReason ? { fallbackReason: plan.fallbackReason } : {}),
          ...(evidence
            ? {
                evidence: {
                  documentErrors: evidence.documentErrors.length,
                  logLines: evidence.containerLog?.lines.length ?? 0,
                  ...(evidence.unavailable ? { unavailable: evidence.unavailable } : {}),
                },
              }
            : {}),
        },
        decidedBy: plan.source,
        confidence: plan.confidence,
        // The runbook's plan: why, in one word (DESIGN.md §9); the detail is in params.fallbackReason.
        outcome:
          plan.source === 'runbook' && plan.fallbackReason
            ? (plan.fallbackCause ?? classifyFallback(plan.fallbackReason))
            : undefined,
      });

      if (plan.action === 'escalate_to_human') return escalate(plan.reasoning || 'the plan is to escalate');
      if (plan.action === 'no_action') {
        // Nothing proposed: see whether the anomaly went away on its own.
      } else {
        // 2. Policy
        enter('checking', `${plan.action} proposed by ${planSourceLabel(plan)}`);
        const { verdict, stage } = await checkSafetyWaiting({ plan });
        await audit({
          step: verdict.decision === 'escalate' ? 'refused' : 'checked',
          action: plan.action,
          params: { planId: plan.id, reasons: verdict.reasons },
          decidedBy: 'policy',
          confidence: plan.confidence,
          outcome: verdict.decision,
        });
        if (verdict.decision === 'escalate') return escalate(`refused by policy: ${verdict.reasons.join('; ')}`);

        // 3. Approval
        if (verdict.decision === 'needs_approval') {
          enter('awaiting_approval', verdict.reasons.join('; '));
          // Tell a human (log, webhook with the commands bound to this plan); a failed notice never blocks the wait.
          let notice: string;
          try {
            const r = await notices.requestApproval({
              plan,
              idempotencyKey: `${info.workflowId}:${info.runId}:${rung}:${plan.id}:approval`,
            });
            notice = typeof r.details.webhook === 'string' ? r.details.webhook : r.outcome;
          } catch (err) {
            notice = `failed: ${err instanceof Error ? err.message : String(err)}`;
          }
          await audit({
            step: 'notified',
            action: plan.action,
            params: { planId: plan.id, event: 'approval_requested', reasons: verdict.reasons },
            decidedBy: 'policy',
            outcome: notice,
          });
          const decided = await condition(() => pending !== null, policy.approvalTimeoutSeconds * 1000);
          if (!decided) {
            pending = {
              decision: 'reject',
              by: 'policy',
              reason: 'approval timeout',
              planId: plan.id,
              at: Date.now(),
              via: 'timeout',
            };
          }
          const d = pending!;
          status.decision = d;
          await audit({
            step: d.decision === 'approve' ? 'approved' : 'rejected',
            action: plan.action,
            params: { planId: plan.id, via: d.via },
            decidedBy: d.by,
            confidence: plan.confidence,
            outcome: d.reason,
          });
          if (d.decision === 'reject') {
            return finish(
              'rejected',
              d.via === 'timeout'
                ? `no decision within ${policy.approvalTimeoutSeconds} s: rejected`
                : `rejected by ${d.by}: ${d.reason ?? ''}`,
              {
                decidedBy: d.by,
              },
            );
          }
        }

        // 4. Permit of the global budget: wait on a durable timer while it is spent, up to a bound.
        const key = `${info.workflowId}:${info.runId}:${rung}:${plan.id}`;
        const waitedSince = Date.now();
        for (;;) {
          const permit = await reservePermit({
            idempotencyKey: key,
            workflowId: info.workflowId,
            plan,
            stage,
            now: Date.now(),
            maxPerWindow: policy.maxActionsPerHour,
            windowMs: WINDOW_MS,
          });
          if (permit.granted) break;
          const waitMs = permit.nextFreeAt - Date.now();
          if (Date.now() + waitMs - waitedSince > policy.maxRateLimitWaitSeconds * 1000) {
            await audit({
              step: 'rate_limited',
              action: plan.action,
              params: { planId: plan.id, used: permit.used },
              decidedBy: 'policy',
              outcome: 'escalated',
            });
            return escalate(
              `the action budget (${policy.maxActionsPerHour}/h) stays spent past ${policy.maxRateLimitWaitSeconds} s`,
            );
          }
          enter(
            'rate_limited',
            `budget of ${policy.maxActionsPerHour}/h spent: next permit in ${Math.ceil(waitMs / 1000)} s`,
          );
          await audit({
            step: 'rate_limited',
            action: plan.action,
            params: { planId: plan.id, used: permit.used, nextFreeAt: permit.nextFreeAt },
            decidedBy: 'policy',
          });
          await sleep(Math.max(waitMs, 1_000));
        }

        // The verdict may be stale after waiting for approval or a permit: check again before acting.
        const recheck = await checkSafetyWaiting({ plan, ownPermitKey: key });
        if (recheck.verdict.decision === 'escalate') {
          await finishPermit({ idempotencyKey: key, now: Date.now(), outcome: 'refused' });
          await audit({
            step: 'refused',
            action: plan.action,
            params: { planId: plan.id, reasons: recheck.verdict.reasons, recheck: true },
            decidedBy: 'policy',
            outcome: 'escalate',
          });
          return escalate(`refused by policy before acting: ${recheck.verdict.reasons.join('; ')}`);
        }

        // A restart for a problem health checks cannot see (errors, slowness, a stall): only while the detector
        // still finds it. Blind (Redis or Postgres unreadable) is not "still there": a human decides.
        if (plan.action === 'restart_worker' && !HEALTH_VISIBLE_TYPES.includes(anomaly.type)) {
          const still = await verify(input);
          if (still.healed || still.blind) {
            await finishPermit({ idempotencyKey: key, now: Date.now(), outcome: 'nothing_to_do' });
            await audit({
              step: 'skipped',
              action: plan.action,
              params: { planId: plan.id },
              decidedBy: 'policy',
              outcome: still.note,
            });
            if (still.blind) return escalate(`${plan.action} not run: ${still.note}`);
            return finish('healed', `gone before acting: ${still.note}`);
          }
        }

        // 5. Act
        enter('executing', `${plan.action}${plan.params.container ? ` ${plan.params.container}` : ''}`);
        let result: { outcome: string; details?: Record<string, unknown>; escalate?: boolean };
        try {
          result = await runAction(plan, key);
        } catch (err) {
          const message = err instanceof Error ? err.message : String(err);
          await finishPermit({ idempotencyKey: key, now: Date.now(), outcome: 'failed' });
          status.actions.push({
            action: plan.action,
            planId: plan.id,
            idempotencyKey: key,
            outcome: 'failed',
            at: Date.now(),
          });
          await audit({
            step: 'failed',
            action: plan.action,
            params: { planId: plan.id },
            error: message,
            idempotencyKey: key,
          });
          return escalate(`${plan.action} failed: ${message}`);
        }
        await finishPermit({ idempotencyKey: key, now: Date.now(), outcome: result.outcome });
        status.actions.push({
          action: plan.action,
          planId: plan.id,
          idempotencyKey: key,
          outcome: result.outcome,
          details: result.details,
          at: Date.now(),
        });
        if (result.outcome === 'refused') return escalate(`${plan.action} refused by the actions worker`);
        if (result.escalate) return escalate(`${plan.action}: ${JSON.stringify(result.details ?? {})}`);
      }

      // 6. Verify
      // Rates and means over a window still hold the outcomes from before the fix until the window has passed.
      const windowed = anomaly.type === 'error_rate_spike' || anomaly.type === 'processing_time_anomaly';
      const verifyDelaySeconds = windowed
        ? Math.max(policy.verifyDelaySeconds, input.thresholds.errorRateWindowSeconds)
        : policy.verifyDelaySeconds;
      enter('verifying', `waiting ${verifyDelaySeconds} s, then re-running the ${anomaly.type} detector`);
      await sleep(verifyDelaySeconds * 1000);
      const healed = await verify(input);
      status.verification = { at: Date.now(), healed: healed.healed, note: healed.note };
      await audit({
        step: 'verified',
        action: plan.action,
        params: { planId: plan.id, rung },
        outcome: healed.healed ? 'healed' : `not healed: ${healed.note}`,
      });
      if (healed.healed) return finish('healed', healed.note);
      if (plan.action === 'no_action') return escalate(`no action proposed and the anomaly persists: ${healed.note}`);
      log.info('not healed, next rung', { rung });
    }
  };

  try {
    return await heal();
  } catch (err) {
    // An activity out of retries (LLM, safety state, verification...): never end silently; tell a human.
    const message = err instanceof Error ? err.message : String(err);
    enter('failed', `healing failed: ${message}`);
    await audit({ step: 'failed', action: status.plan?.action, error: message, decidedBy: 'policy' });
    try {
      await actions.escalateToHuman({
        plan: {
          id: `${status.plan?.id ?? 'none'}-failure`,
          anomalyType: anomaly.type,
          action: 'escalate_to_human',
          target: anomaly.target,
          params: { reason: `healing failed: ${message}` },
          reasoning: `healing failed: ${message}`,
          confidence: 1,
          source: 'runbook',
          rung: status.plan?.rung ?? 0,
        },
        idempotencyKey: `${info.workflowId}:${info.runId}:failure`,
      });
    } catch {
      log.error('escalation after a failure could not be sent', { workflowId: info.workflowId });
    }
    return status;
  }
}

/** Re-collects the snapshot (and the containers) and re-runs the same detector. */
async function verify(input: HealingInput): Promise<{ healed: boolean; blind?: boolean; note: string }> {
  const [snapshot, docker] = await Promise.all([
    collectMetrics(),
    inspectContainers({ names: input.containers, labels: input.containerLabels }),
  ]);
  const merged: Snapshot = {
    ...snapshot,
    containers: docker.containers,
    sources: { ...snapshot.sources, docker: docker.ok ? { ok: true } : { ok: false, error: docker.error } },
  };
  const r = await recheckAnomaly({ anomaly: input.anomaly, snapshot: merged, thresholds: input.thresholds });
  // Container anomalies cannot be verified without Docker's view of the containers.
  const needed = input.anomaly.type === 'unhealthy_container' ? ['redis', 'postgres', 'docker'] : ['redis', 'postgres'];
  const blind = r.degraded.filter((s) => needed.includes(s));
  if (blind.length > 0) return { healed: false, blind: true, note: `cannot verify: ${blind.join(', ')} unreadable` };
  if (r.present) return { healed: false, note: r.current?.summary ?? 'still detected' };
  return { healed: true, note: `${input.anomaly.type} no longer detected on ${input.anomaly.target}` };
}
