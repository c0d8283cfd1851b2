/** The demo's printing: what a fault did, a healing's timeline entries, the settings it runs with, the summary. */
import type { HealPhase } from '../core/types';
import type { ChaosResult } from '../pipeline/chaos';
import type { DemoResult } from './demo-types';
import { DEMO_APPROVER } from './demo-settings';
import { formatTable } from './output';

/** One line saying what a fault really did. */
export function describeInjection(r: ChaosResult): string {
  const s = (v: unknown) => (typeof v === 'string' || typeof v === 'number' ? String(v) : JSON.stringify(v));
  switch (r.fault) {
    case 'stuck-documents':
      return `${(r.documents as unknown[]).length} documents left processing on ${s(r.stage)} by ${s(r.owner)}, a worker with no heartbeat`;
    case 'kill-worker':
      return r.kind === 'container'
        ? `docker kill of container ${s(r.container)}`
        : `SIGKILL of ${s(r.worker)} (pid ${s(r.pid)})`;
    case 'error-rate':
      return `${Number(r.fraction) * 100}% of ${r.worker ? `${s(r.worker)}'s` : 'the'} ${s(r.stage)} documents fail`;
    case 'slow':
      return `${r.worker ? `${s(r.worker)}'s` : 'the'} ${s(r.stage)} processing ${s(r.factor)}x slower`;
    case 'hang-worker':
      return `${s(r.worker)} stops taking documents${r.silent ? ', /health still answers 200' : ', /health answers 503'}`;
    case 'stale-lock':
      return `${(r.documents as unknown[]).length} document locks held by ${s(r.owner)}, which has no heartbeat`;
    default:
      return JSON.stringify(r);
  }
}

export const PHASE_LABEL: Partial<Record<HealPhase, string>> = {
  analyzing: 'analysing',
  awaiting_approval: 'awaiting approval',
  rate_limited: 'rate limited',
};

export const oneLine = (text: string, max = 160) => {
  const t = text.replace(/\s+/g, ' ').trim();
  return t.length > max ? `${t.slice(0, max - 1)}…` : t;
};

/** The summary as a table: one row per fault. */
export function formatDemoSummary(result: DemoResult): string {
  const secs = (v: number | null) => (v === null ? '-' : `${v.toFixed(1)} s`);
  const rows = result.steps.map((s) => [
    s.fault,
    secs(s.detectedSeconds),
    s.actions.length > 0 ? s.actions.join(' -> ') : s.action ? `${s.action} (not run)` : '-',
    s.outcome,
    secs(s.healSeconds),
    s.workflowId ?? '-',
  ]);
  return formatTable(['fault', 'detected after', 'action', 'outcome', 'time to heal', 'workflow'], rows);
}

/** The settings the demo runs with: demo-scaled ones, those kept from the environment, and who approves plans. */
export function announceSettings(
  say: (line: string) => void,
  demo: { applied: Record<string, string>; kept: Record<string, string> },
  autoFixEnabled: boolean,
  autoApprove: boolean,
): void {
  const applied = Object.entries(demo.applied).map(([k, v]) => `${k}=${v}`);
  say(
    applied.length > 0
      ? `demo: demo-scaled settings for variables your environment does not set: ${applied.join(' ')}`
      : 'demo: every demo setting comes from your environment',
  );
  if (Object.keys(demo.kept).length > 0) {
    say(
      `demo: kept from your environment: ${Object.entries(demo.kept)
        .map(([k, v]) => `${k}=${v}`)
        .join(' ')}`,
    );
  }
  say(
    `demo: ${autoFixEnabled ? 'AUTO_FIX_ENABLED=true' : 'auto-fix is off'}; ${autoApprove ? `plans awaiting approval are approved by "${DEMO_APPROVER}"` : 'plans awaiting approval wait for you (the commands are shown)'}`,
  );
}
