/** What the model is asked to answer: the reply schema, the actions offered, and the analysis context. */
import { z } from 'zod';
import type { AnalysisEvidence } from '../evidence';
import { allowedActionsAt, type RunbookContext } from '../runbook';
import { ActionType, type AnomalyType } from '../types';

export interface LlmPlanContext extends RunbookContext {
  /** Ladder rung being analyzed (default 0); after a failed remedy only actions at or after it are allowed. */
  rung?: number;
  /** Recent document errors and the container's last log lines for the target (untrusted: fenced like the rest). */
  evidence?: AnalysisEvidence;
}

export const ACTIONS = Object.values(ActionType);

/** What the LLM must answer. No target field: the target is not the model's to choose. Extra fields are dropped. */
export const llmReplySchema = z.object({
  action: z.enum(ACTIONS),
  reasoning: z.string().describe('One or two sentences: why this action fits the evidence.'),
  confidence: z.number().min(0).max(1).describe('How sure you are that this action heals the anomaly, 0 to 1.'),
});
export type LlmReply = z.infer<typeof llmReplySchema>;

/**
 * The actions offered to the model for `type` at `rung`: those allowed there, except `no_action`. The monitor's
 * detectors are thresholds over measured state, not guesses, so "a false alarm, do nothing" is not a call to leave to
 * a model: a small one offered it took it for two stuck-document anomalies in three (bench llm and a sample of 12),
 * and a healing that does nothing only escalates one verification later. A reply that says no_action anyway (a
 * server that ignores the schema) is still an allowed action and parsed as such.
 */
export function offeredActionsAt(type: AnomalyType, rung = 0, ladder?: readonly ActionType[]): ActionType[] {
  return allowedActionsAt(type, rung, ladder).filter((a) => a !== 'no_action');
}

/**
 * The reply schema narrowed to the actions offered for `type` at `rung` on `ladder` (the runbook's, default the
 * built-in one): what the model is constrained to.
 */
export function llmReplySchemaFor(type: AnomalyType, rung = 0, ladder?: readonly ActionType[]) {
  return llmReplySchema.extend({ action: z.enum(offeredActionsAt(type, rung, ladder)) });
}

/** JSON Schema of the reply for Ollama's `format` (grammar-constrained output), from the zod schema. */
export function llmReplyJsonSchema(
  type: AnomalyType,
  rung = 0,
  ladder?: readonly ActionType[],
): Record<string, unknown> {
  return z.toJSONSchema(llmReplySchemaFor(type, rung, ladder));
}
