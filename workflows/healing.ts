import { proxyActivities, setHandler } from '@temporalio/workflow';
import type { Anomaly, HealPhase } from '../core/types';
import type { createAuditActivities } from '../activities/audit';
import { anomalySeenSignal, statusQuery } from './definitions';

export interface HealingInput {
  anomaly: Anomaly;
}

export interface HealingStatus {
  phase: HealPhase;
  anomaly: Anomaly;
  plan: null;
  decision: null;
  actions: never[];
  verification: null;
  history: { at: number; phase: HealPhase; note: string }[];
  /** Times the monitor saw the anomaly again while this run was open. */
  seen: number;
}

const audit = proxyActivities<ReturnType<typeof createAuditActivities>>({
  startToCloseTimeout: '30 seconds',
  retry: { maximumAttempts: 20, initialInterval: '1 second', maximumInterval: '30 seconds' },
});

/**
 * Healing of one anomaly. This version only records the anomaly and escalates it to a human: analysis,
 * safety policy, approval and actions come with the healing issue. It never acts.
 */
export async function healingWorkflow(input: HealingInput): Promise<HealingStatus> {
  const { anomaly } = input;
  const status: HealingStatus = {
    phase: 'escalated',
    anomaly,
    plan: null,
    decision: null,
    actions: [],
    verification: null,
    history: [],
    seen: 1,
  };
  setHandler(statusQuery, () => status);
  setHandler(anomalySeenSignal, () => {
    status.seen += 1;
  });
  await audit.appendHealingLog({
    step: 'escalated',
    anomalyType: anomaly.type,
    target: anomaly.target,
    action: 'escalate_to_human',
    params: { summary: anomaly.summary, evidence: anomaly.evidence },
    decidedBy: 'policy',
    outcome: 'escalated: automatic healing is not available in this version',
  });
  status.history.push({ at: Date.now(), phase: 'escalated', note: 'recorded and escalated to a human' });
  return status;
}
