/** The demo's tracker: every healing started since the demo began, followed through its status query. */
import type { Client, WorkflowExecutionInfo } from '@temporalio/client';
import { approveSignal, SearchAttr, statusQuery, WorkflowType } from '../workflows/definitions';
import type { HealingStatus } from '../workflows/healing';
import { oneLine, PHASE_LABEL } from './demo-output';
import { DEMO_APPROVER } from './demo-settings';
import { TERMINAL, type DemoStepResult, type OtherHealing } from './demo-types';

export const POLL_MS = 500;

/** A healing workflow run the demo has seen start. */
export interface Tracked {
  workflowId: string;
  runId: string;
  type: string;
  target: string;
  startedAt: number;
  /** Step it started during (-1: the baseline), and the time its elapsed seconds count from. */
  step: number;
  t0: number;
  closed: boolean;
  status?: HealingStatus;
  printed: number;
  decisionShown: boolean;
  /** Plan ids approved by the demo, or whose approve/reject commands were shown. */
  handledPlans: Set<string>;
}

/** A step's healing: the run of its workflow id that started after the injection, less a second. */
export function stepHealing(
  tracked: Map<string, Tracked>,
  workflowId: string | null,
  injectedAt: number,
): Tracked | undefined {
  return [...tracked.values()].find((x) => x.workflowId === workflowId && x.startedAt >= injectedAt - 1_000);
}

/** The step's row from its healing (found by workflow id, started after the injection). */
export function fillRow(tracked: Map<string, Tracked>, row: DemoStepResult, injectedAt: number): void {
  const t = stepHealing(tracked, row.workflowId, injectedAt);
  if (!t) return;
  row.runId = t.runId;
  const st = t.status;
  if (st) {
    row.detectedSeconds = Number(((st.anomaly.detectedAt - injectedAt) / 1000).toFixed(1));
    row.actions = st.actions.map((a) => a.action);
    row.action = row.actions.at(-1) ?? st.plan?.action ?? null;
    row.decidedBy = st.decision ? st.decision.by : null;
    if (t.closed) {
      row.outcome = TERMINAL.includes(st.phase) ? st.phase : 'failed';
      row.healSeconds = Number((((st.history.at(-1)?.at ?? Date.now()) - injectedAt) / 1000).toFixed(1));
      row.note = st.history.at(-1)?.note ?? null;
    }
  } else if (t.closed) {
    row.outcome = 'failed';
    row.note = 'the workflow run did not complete';
  }
}

/** Healings that are no step's own (started during the baseline or beside a step's), for the summary. */
export function otherHealings(tracked: Map<string, Tracked>, steps: DemoStepResult[]): OtherHealing[] {
  const others: OtherHealing[] = [];
  for (const t of tracked.values()) {
    const primary = steps.some((s) => s.runId === t.runId);
    if (primary) continue;
    others.push({
      workflowId: t.workflowId,
      anomalyType: t.type,
      target: t.target,
      phase: t.status?.phase ?? (t.closed ? 'failed' : 'running'),
      during: t.step < 0 ? 'baseline' : (steps[t.step]?.fault ?? '?'),
    });
  }
  return others;
}

export interface TrackerOptions {
  client: Client;
  tracked: Map<string, Tracked>;
  /** Healings started since then (an ISO time) are followed. */
  since: string;
  autoApprove: boolean;
  /** APPROVAL_TIMEOUT, in the hint shown with a plan that waits for approval. */
  approvalTimeout: number;
  link: (workflowId: string) => string;
  say: (line: string) => void;
  sleep: (ms: number) => Promise<void>;
  checkAbort: () => void;
}

/** Follows the healings; `startStep` makes the new ones count from a step's injection. */
export function createTracker(opts: TrackerOptions) {
  const { client, tracked, since, autoApprove, approvalTimeout, link, say, sleep, checkAbort } = opts;
  let currentStep = -1;
  let stepT0 = Date.now();
  const stamp = (t: Tracked | undefined, at: number) => {
    const s = ((at - (t?.t0 ?? stepT0)) / 1000).toFixed(1);
    return `[${s.padStart(6)}s]`;
  };

  const follow = async (t: Tracked, listed: WorkflowExecutionInfo) => {
    const h = client.workflow.getHandle(t.workflowId, t.runId);
    const name = listed.status.name;
    if (name === 'RUNNING') {
      const st = await h.query(statusQuery).catch(() => undefined);
      if (st) t.status = st;
    } else if (name === 'COMPLETED') {
      t.status = (await h.result()) as HealingStatus;
      t.closed = true;
    } else {
      t.closed = true;
      say(`${stamp(t, Date.now())} ${t.workflowId}  ${name.toLowerCase()} (the run did not complete)`);
    }
    const st = t.status;
    if (!st) return;
    // New timeline entries and the decision, in the workflow's order.
    const events = st.history
      .slice(t.printed)
      .map((e) => ({ at: e.at, text: `${PHASE_LABEL[e.phase] ?? e.phase}: ${oneLine(e.note)}` }));
    if (st.decision && !t.decisionShown) {
      t.decisionShown = true;
      const d = st.decision;
      events.push({
        at: d.at,
        text: `${d.decision === 'approve' ? 'approved' : 'rejected'} by ${d.by} (${d.via}, plan ${d.planId})`,
      });
    }
    for (const e of events.sort((x, y) => x.at - y.at)) say(`${stamp(t, e.at)} ${t.workflowId}  ${e.text}`);
    t.printed = st.history.length;
    if (!st.decision) t.decisionShown = false;
    const plan = st.plan;
    if (!t.closed && st.phase === 'awaiting_approval' && plan && !st.decision && !t.handledPlans.has(plan.id)) {
      t.handledPlans.add(plan.id);
      if (autoApprove) {
        await h.signal(approveSignal, { by: DEMO_APPROVER, reason: 'selfheal demo --auto-approve', planId: plan.id });
      } else {
        const cli = 'selfheal';
        say(
          `           ${t.workflowId} waits for you: ${plan.action} (plan ${plan.id}, ${plan.source}, confidence ${plan.confidence.toFixed(2)})`,
        );
        say(`             approve: ${cli} approve ${t.workflowId} --by NAME --plan ${plan.id}`);
        say(`             reject:  ${cli} reject ${t.workflowId} --by NAME --reason TEXT --plan ${plan.id}`);
        say(`             (no decision within ${approvalTimeout} s rejects it)`);
      }
    }
  };

  const poll = async () => {
    const query = `WorkflowType = '${WorkflowType.healing}' AND StartTime >= '${since}'`;
    for await (const wf of client.workflow.list({ query })) {
      let t = tracked.get(wf.runId);
      if (!t) {
        const sa = wf.typedSearchAttributes;
        t = {
          workflowId: wf.workflowId,
          runId: wf.runId,
          type: sa.get(SearchAttr.AnomalyType) ?? '?',
          target: sa.get(SearchAttr.HealTarget) ?? '?',
          startedAt: wf.startTime.getTime(),
          step: currentStep,
          t0: stepT0,
          closed: false,
          printed: 0,
          decisionShown: false,
          handledPlans: new Set(),
        };
        tracked.set(wf.runId, t);
        say(
          `${stamp(t, t.startedAt)} detected: ${t.type} on ${t.target}, workflow ${t.workflowId} started  ${link(t.workflowId)}`,
        );
      }
      if (!t.closed) await follow(t, wf);
    }
  };
  const awaitingApproval = () =>
    [...tracked.values()].some((t) => !t.closed && t.status?.phase === 'awaiting_approval');

  /**
   * Polls until `done()` or `boundMs` of active time pass; time while a healing awaits approval does not count
   * (that wait has its own bound, APPROVAL_TIMEOUT, after which the workflow rejects).
   */
  const pollUntil = async (done: () => boolean | Promise<boolean>, boundMs: number): Promise<boolean> => {
    let active = 0;
    for (;;) {
      checkAbort();
      await poll();
      if (await done()) return true;
      if (active > boundMs) return false;
      const before = Date.now();
      await sleep(POLL_MS);
      if (!awaitingApproval()) active += Date.now() - before;
    }
  };

  return {
    poll,
    stamp,
    awaitingApproval,
    pollUntil,
    /** Healings seen from now on started during step `step`, and their elapsed seconds count from `t0`. */
    startStep(step: number, t0: number) {
      currentStep = step;
      stepT0 = t0;
    },
  };
}
