/**
 * Healing of one anomaly (docs/ARCHITECTURE.md): analyze, check the policy, wait for approval when the policy says
 * so, wait for a permit, act through the actions worker, verify, and take the next rung when the fix did not work.
 * Every step is written to healing_log; the phase, the action and a markdown timeline are visible in the Web UI.
 * The phases are in healing/; this file is the loop that walks them.
 */
import { log } from '@temporalio/workflow';
import type { Plan } from '../core/plan';
import type { Anomaly } from '../core/types';
import { errorMessage } from '../core/errors';
import { planSourceLabel } from '../core/fallback-cause';
import type { HealingInput, HealingStatus } from './definitions';
import { awaitApproval, setHandlers } from './healing/approval';
import {
  actUnlessSilenced,
  analyze,
  beforeActing,
  checkSafetyWaiting,
  execute,
  holdWhileSilenced,
  verifyFix,
  waitForPermit,
} from './healing/phases';
import { createHealingRun, failHealing, type HealingRun } from './healing/run';

export type { ActionRecord, Decision, HealingInput, HealingPolicy, HealingStatus } from './definitions';

export async function healingWorkflow(input: HealingInput): Promise<HealingStatus> {
  const run = createHealingRun(input);
  setHandlers(run);
  await run.audit({
    step: 'detected',
    params: { summary: input.anomaly.summary, severity: input.anomaly.severity, evidence: input.anomaly.evidence },
  });
  try {
    return await heal(run);
  } catch (err) {
    // An activity out of retries (LLM, safety state, verification...): never end silently; tell a human.
    await failHealing(run, errorMessage(err));
    return run.status;
  }
}

async function heal(run: HealingRun): Promise<HealingStatus> {
  const { info, status } = run;
  let poisonRetried = false;
  // The next rung continues after the remedy actually tried (the runbook may skip a rung it cannot apply).
  for (let rung = 0; ;) {
    const plan = await analyze(run, rung);
    if (plan.action === 'escalate_to_human') return run.escalate(plan.reasoning || 'the plan is to escalate');
    // no_action: nothing to check or do; verification tells whether the anomaly went away on its own.
    if (plan.action !== 'no_action') {
      run.enter('checking', `${plan.action} proposed by ${planSourceLabel(plan)}`);
      const { verdict, stage } = await checkSafetyWaiting(run, { plan });
      await run.audit({
        step: verdict.decision === 'escalate' ? 'refused' : 'checked',
        action: plan.action,
        params: { planId: plan.id, reasons: verdict.reasons },
        decidedBy: 'policy',
        confidence: plan.confidence,
        outcome: verdict.decision,
      });
      if (verdict.decision === 'escalate') return run.escalate(`refused by policy: ${verdict.reasons.join('; ')}`);
      if (verdict.decision === 'needs_approval') {
        // No approval is asked for during a maintenance window: the request waits for the silence to end.
        if (run.since('silences')) {
          const hold = await holdWhileSilenced(run, plan);
          if (hold.end) return hold.end;
        }
        const d = await awaitApproval(run, plan, verdict, rung, () => holdWhileSilenced(run, plan));
        if ('end' in d) return d.end;
        if (d.decision === 'reject') {
          const why =
            d.via === 'timeout'
              ? `no decision within ${run.policy.approvalTimeoutSeconds} s: rejected`
              : `rejected by ${d.by}: ${d.reason ?? ''}`;
          return run.finish('rejected', why, { decidedBy: d.by });
        }
      }
      const key = `${info.workflowId}:${info.runId}:${rung}:${plan.id}`;
      // Silences (maintenance windows) hold the action; histories from before them replay the old sequence.
      const stop = run.since('silences')
        ? await actUnlessSilenced(run, plan, stage, key)
        : ((await waitForPermit(run, plan, stage, key)) ??
          (await beforeActing(run, plan, key)) ??
          (await execute(run, plan, key)));
      if (stop) return stop;
    }
    const healed = await verifyFix(run, plan, rung);
    if (healed.healed) return run.finish('healed', healed.note);
    if (plan.action === 'no_action') {
      return run.escalate(`no action proposed and the anomaly persists: ${healed.note}`);
    }
    // The restarted worker died again holding a document that killed it before: the same remedy once more, planned
    // from what is seen now, so that document is quarantined first (a poison document must not keep it down).
    if (!poisonRetried && newPoisonSuspects(plan, healed.current).length > 0 && run.since('poison-first')) {
      poisonRetried = true;
      run.anomaly = healed.current!;
      log.info('died again on a document that killed it before: restart with it quarantined first', { rung });
      continue;
    }
    log.info('not healed, next rung', { rung });
    rung = (status.plan?.rung ?? rung) + 1;
  }
}

/** Documents the current anomaly names as poison suspects that the restart just tried did not quarantine. */
function newPoisonSuspects(plan: Plan, current: Anomaly | undefined): unknown[] {
  if (plan.action !== 'restart_worker' || current?.type !== 'unhealthy_container') return [];
  const suspects = current.evidence.poisonSuspects;
  const done = new Set(plan.params.quarantineFirst ?? []);
  return Array.isArray(suspects) ? suspects.filter((id) => !done.has(id as number)) : [];
}
