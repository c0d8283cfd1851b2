/**
 * Why the runbook, not the LLM, planned (docs/ARCHITECTURE.md, Analysis): one word from a closed vocabulary, written to healing_log's
 * `proposed` row as `outcome` and shown in the status query, the Web UI and `selfheal show`. The detailed reason
 * (`Plan.fallbackReason`, e.g. `down: fetch failed (ECONNREFUSED)`) stays next to it for the human.
 */
export const FallbackCause = {
  /** No answer within LLM_TIMEOUT_MS, or no free LLM slot before it ran out. */
  timeout: 'timeout',
  /** The reply could not be read as a plan, or its action cannot be applied to the evidence. */
  invalid_reply: 'invalid_reply',
  /**
   * The reply chose an action not allowed for the anomaly (or rung), or tried to steer the plan (named another
   * target, carried instructions): `suspect` maps here.
   */
  unsafe_action: 'unsafe_action',
  /** Ollama answered, but the model is not there (HTTP 404 "model ... not found": not pulled). */
  model_absent: 'model_absent',
  /** Ollama could not be reached, or answered with another HTTP error. */
  unavailable: 'unavailable',
  /** Not a fallback: the anomaly type is never put to the LLM (llm_unavailable, monitoring_degraded). */
  not_consulted: 'not_consulted',
} as const;
export type FallbackCause = (typeof FallbackCause)[keyof typeof FallbackCause];

const CAUSES = new Set<string>(Object.values(FallbackCause));

/** An HTTP 404 from Ollama that says the model is missing (`model "x" not found, try pulling it first`). */
const MODEL_NOT_FOUND = /\b404\b[\s\S]{0,200}\bmodel\b[\s\S]{0,200}\bnot found\b|\bmodel\b[\s\S]{0,200}\bnot found\b/i;

/**
 * The cause of a fallback from its detailed reason `<kind>: <detail>` (kind as `activities/analysis.ts` writes it:
 * not_consulted, busy, down, timeout, error, model_absent, invalid, disallowed, suspect, inapplicable). An unknown
 * kind is `invalid_reply` for a reply problem and `unavailable` otherwise; never throws.
 */
export function classifyFallback(reason: string): FallbackCause {
  const text = typeof reason === 'string' ? reason.slice(0, 1_000) : '';
  const colon = text.indexOf(':');
  const kind = (colon >= 0 ? text.slice(0, colon) : text).trim().toLowerCase();
  const detail = colon >= 0 ? text.slice(colon + 1) : '';
  switch (kind) {
    case 'timeout':
    case 'busy':
      return 'timeout';
    case 'invalid':
    case 'inapplicable':
      return 'invalid_reply';
    case 'disallowed':
    case 'suspect':
      return 'unsafe_action';
    case 'model_absent':
      return 'model_absent';
    case 'error':
      return /\bHTTP 404\b/.test(detail) && MODEL_NOT_FOUND.test(detail) ? 'model_absent' : 'unavailable';
    case 'down':
      return 'unavailable';
    case 'not_consulted':
      return 'not_consulted';
    default:
      return CAUSES.has(kind) ? (kind as FallbackCause) : 'unavailable';
  }
}

/** Who decided the plan and, for the runbook, why: `llm`, or `runbook (timeout)`. */
export function planSourceLabel(plan: { source: string; fallbackReason?: string; fallbackCause?: string }): string {
  if (plan.source === 'llm') return 'llm';
  const cause = plan.fallbackCause ?? (plan.fallbackReason ? classifyFallback(plan.fallbackReason) : undefined);
  return cause ? `runbook (${cause})` : 'runbook';
}
