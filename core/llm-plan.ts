/**
 * The LLM's side of analysis, pure: the prompt (only the actions offered, untrusted text fenced, redacted and
 * bounded), the JSON schema the model must answer in, and `parsePlan`, which turns whatever came back into a safe
 * plan or a refusal, never an exception. The model chooses an action and explains it; the target and every
 * parameter come from the anomaly and the runbook, whatever the reply says.
 */
export type { Result } from './result';
export { combineConfidence, evidenceStrength } from './llm-plan/confidence';
export { MAX_REPLY_CHARS, parsePlan, REASONING_MAX, type ParseAudit, type ParsePlanResult } from './llm-plan/parse';
export {
  buildPrompt,
  PROMPT_ARRAY_MAX,
  PROMPT_DATA_MAX,
  PROMPT_ERROR_CHARS,
  PROMPT_EVIDENCE_ERRORS,
  PROMPT_EVIDENCE_MAX,
  PROMPT_ITEM_MAX,
  PROMPT_LOG_LINES,
  PROMPT_LOG_LINE_CHARS,
  SYSTEM_PROMPT,
} from './llm-plan/prompt';
export { repairJson } from './llm-plan/repair-json';
export {
  llmReplyJsonSchema,
  llmReplySchema,
  llmReplySchemaFor,
  offeredActionsAt,
  type LlmPlanContext,
  type LlmReply,
} from './llm-plan/schema';
