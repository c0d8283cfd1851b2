import { proxyActivities, setCurrentDetails, setHandler, upsertSearchAttributes } from '@temporalio/workflow';
import type { Anomaly, HealPhase } from '../core/types';
import type { createAuditActivities } from '../activities/audit';
import { anomalySeenSignal, SearchAttr, statusQuery } from './definitions';

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
  // The audit must be written, even after a long database outage: retry for a long while, never forever.
  retry: { maximumAttempts: 200, initialInterval: '1 second', maximumInterval: '30 seconds' },
});

/**
 * Healing of one anomaly. THIS VERSION ONLY RECORDS THE ANOMALY AND ESCALATES IT TO A HUMAN: analysis, the
 * safety policy, approval and actions come with the healing issue. It never acts on the pipeline.
 */
export async function healingWorkflow(input: HealingInput): Promise<HealingStatus> {
  const { anomaly } = input;
  const status: HealingStatus = {
    phase: 'analyzing',
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

  const enter = (phase: HealPhase, note: string) => {
    status.phase = phase;
    status.history.push({ at: Date.now(), phase, note });
    upsertSearchAttributes([{ key: SearchAttr.HealPhase, value: phase }]);
    setCurrentDetails(
      [
        `**${anomaly.type}** on \`${anomaly.target}\` (${anomaly.severity})`,
        '',
        ...status.history.map((h) => `- ${new Date(h.at).toISOString()} **${h.phase}**: ${h.note}`),
      ].join('\n'),
    );
  };

  enter('analyzing', anomaly.summary);
  await audit.appendHealingLog({
    step: 'detected',
    anomalyType: anomaly.type,
    target: anomaly.target,
    params: { summary: anomaly.summary, severity: anomaly.severity, evidence: anomaly.evidence },
    decidedBy: 'policy',
  });
  upsertSearchAttributes([{ key: SearchAttr.HealAction, value: 'escalate_to_human' }]);
  await audit.appendHealingLog({
    step: 'escalated',
    anomalyType: anomaly.type,
    target: anomaly.target,
    action: 'escalate_to_human',
    decidedBy: 'policy',
    outcome: 'escalated: automatic healing is not available in this version',
  });
  enter('escalated', 'recorded and escalated to a human (automatic healing not available in this version)');
  return status;
}
