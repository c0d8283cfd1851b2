/** The demo's results (its JSON output) and errors, shared by its parts. */
import type { AnomalyType, HealPhase } from '../core/types';

/** Phases a healing ends in. */
export const TERMINAL: readonly string[] = ['healed', 'escalated', 'rejected', 'failed'] satisfies HealPhase[];

export class DemoError extends Error {
  readonly type = 'demo_failed';
}
/** Thrown when the demo's signal aborts it: the demo stops and reports what it reached. */
export class DemoInterrupted extends Error {
  readonly type = 'interrupted';
}

/** Outcome of a step: the healing's terminal phase, or why there is none. */
export type StepOutcome = HealPhase | 'not_detected' | 'timed_out' | 'injection_failed' | 'interrupted';

export interface DemoStepResult {
  /** Seed fault class, as `selfheal chaos` names it. */
  fault: string;
  /** The `selfheal chaos` invocations that injected it. */
  chaos: string[];
  anomalyType: AnomalyType;
  target: string;
  workflowId: string | null;
  runId: string | null;
  webUi: string | null;
  /** Seconds from injection to the monitor's detection. */
  detectedSeconds: number | null;
  /** Actions taken, in order (a ladder may take several). */
  actions: string[];
  /** The remedy: the last action taken, else the plan's action. */
  action: string | null;
  outcome: StepOutcome;
  /** Seconds from injection to the terminal phase. */
  healSeconds: number | null;
  decidedBy: string | null;
  note: string | null;
}

export interface OtherHealing {
  workflowId: string;
  anomalyType: string;
  target: string;
  phase: string;
  /** The fault being demonstrated when it started, or `baseline`. */
  during: string;
}

export interface DemoResult {
  ok: boolean;
  interrupted: boolean;
  namespace: string;
  temporalAddress: string;
  webUi: string;
  autoApprove: boolean;
  /** Demo-scaled settings applied (variables the environment did not set). */
  settings: Record<string, string>;
  pipeline: { worker: string; stage: string; kind: string; container: string | null }[];
  baseline: { seconds: number; documentsPerSecond: number } | null;
  steps: DemoStepResult[];
  otherHealings: OtherHealing[];
  totalSeconds: number;
}
