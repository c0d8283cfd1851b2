/** Reply parsing: whatever the model answered becomes a safe plan or a refusal, never an exception. */
import type { Plan } from '../plan';
import { sanitizeUntrusted } from '../redact';
import type { Result } from '../result';
import { allowedActionsAt, deriveParams, ladderIndex, runbookPlan, withPlanId } from '../runbook';
import type { Anomaly } from '../types';
import { combineConfidence, evidenceStrength } from './confidence';
import { balancedObjects, repairJson } from './repair-json';
import { ACTIONS, llmReplySchema, type LlmPlanContext } from './schema';
import { errorMessage } from '../errors';

/** Replies longer than this (UTF-16 units, ~20 kB) are refused unread: no model answers a plan at this length. */
export const MAX_REPLY_CHARS = 20_000;
/** The model's reasoning kept in the plan (shown to the approver, written to the audit). */
export const REASONING_MAX = 1_000;

export interface ParseAudit {
  /** The reply named another target, a disallowed or unknown action, or carried injection-like text. */
  injectionSuspected: boolean;
  /** What was ignored or repaired, for the audit (each line bounded and redacted). */
  notes: string[];
}
/** `parsePlan`'s answer. Failures start with `invalid:`, `disallowed:` or `inapplicable:`. */
export type ParsePlanResult = Result<Plan> & ParseAudit;

type Extracted = { ok: true; value: Record<string, unknown>; how: string } | { ok: false; error: string };

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const kindOf = (v: unknown): string => (v === null ? 'null' : Array.isArray(v) ? 'an array' : `a ${typeof v}`);

function tryJson(text: string): { ok: true; value: unknown } | { ok: false } {
  try {
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch {
    return { ok: false };
  }
}

/** The JSON object a reply carries: direct JSON, a fenced block, an object inside prose, or a repaired one. */
function extractObject(text: string, notes: string[]): Extracted {
  const direct = tryJson(text);
  if (direct.ok) {
    let value = direct.value;
    if (typeof value === 'string') {
      // A model that double-encoded its answer: unwrap once.
      const inner = tryJson(value.trim());
      if (inner.ok && isRecord(inner.value)) {
        notes.push('reply was a JSON string holding the object; unwrapped');
        value = inner.value;
      }
    }
    return isRecord(value)
      ? { ok: true, value, how: 'json' }
      : { ok: false, error: `invalid: expected a JSON object, got ${kindOf(value)}` };
  }
  const fence = /```[ \t]*(?:json|JSON|json5)?[ \t]*\r?\n?([\s\S]*?)(?:```|$)/.exec(text);
  const fenced = fence?.[1]?.trim();
  if (fenced) {
    const parsed = tryJson(fenced);
    if (parsed.ok && isRecord(parsed.value)) return { ok: true, value: parsed.value, how: 'fenced' };
  }
  const objects = balancedObjects(fenced ?? text)
    .map(tryJson)
    .flatMap((p) => (p.ok && isRecord(p.value) ? [p.value] : []));
  if (objects.length > 0) {
    const withAction = objects.filter((o) => 'action' in o);
    const actions = new Set(withAction.map((o) => JSON.stringify(o.action)));
    if (actions.size > 1) {
      return { ok: false, error: 'invalid: ambiguous reply, several JSON objects name different actions' };
    }
    return { ok: true, value: withAction[0] ?? objects[0]!, how: 'embedded' };
  }
  const source = fenced ?? text;
  const brace = source.indexOf('{');
  if (brace >= 0) {
    const repaired = tryJson(repairJson(source.slice(brace)));
    if (repaired.ok && isRecord(repaired.value)) {
      notes.push('reply was not valid JSON; repaired leniently');
      return { ok: true, value: repaired.value, how: 'repaired' };
    }
  }
  return { ok: false, error: 'invalid: no JSON object found in the reply' };
}

/** Fields that name where to act: the reply does not get to choose them. */
const TARGET_KEYS =
  /target|container|host|node|service|worker|pod|document|^ids?$|stage|queue|lock|entr|params|arg|command|cmd|exec|shell|url|name/i;
const INJECTION_TEXT =
  /ignore (?:all |any |the )?(?:previous|prior|above|earlier)|disregard (?:the|all|any|previous)|system prompt|you are now|new instructions|developer mode|jailbreak|\bsudo\b|rm -rf|drop (?:table|database)/i;
const OTHER_TARGET_TEXT =
  /\b(?:restart|kill|stop|delete|drop|remove|flush|wipe|truncate)\b[^.\n]{0,40}\b(?:postgres(?:ql)?|redis|temporal|ollama|selfheal|database|all (?:workers|containers))\b/i;

/**
 * Turns an LLM reply into a plan, or refuses with a reason; never throws. The reply chooses the action (among
 * those allowed for the anomaly's type at the rung), explains it and states a confidence; the target and all
 * parameters come from the anomaly (`deriveParams`), whatever the reply says. What the reply tried and what was
 * repaired or ignored is reported in `injectionSuspected` and `notes`.
 */
export function parsePlan(raw: string, anomaly: Anomaly, context: LlmPlanContext): ParsePlanResult {
  const notes: string[] = [];
  let injectionSuspected = false;
  const note = (text: string) => {
    if (notes.length < 12) notes.push(sanitizeUntrusted(text, 200));
  };
  const fail = (error: string): ParsePlanResult => ({
    ok: false,
    error: sanitizeUntrusted(error, 300),
    injectionSuspected,
    notes,
  });
  try {
    if (typeof raw !== 'string') return fail(`invalid: expected text, got ${kindOf(raw)}`);
    if (raw.length > MAX_REPLY_CHARS)
      return fail(`invalid: reply too large (${raw.length} > ${MAX_REPLY_CHARS} chars)`);
    const text = raw.replace(/^\uFEFF/, '').trim();
    if (text.length === 0) return fail('invalid: empty reply');
    const extracted = extractObject(text, notes);
    if (!extracted.ok) return fail(extracted.error);
    if (extracted.how === 'fenced' || extracted.how === 'embedded') note(`JSON found ${extracted.how} in the reply`);
    const obj = extracted.value;
    const rung = Number.isSafeInteger(context.rung) && context.rung! > 0 ? context.rung! : 0;

    for (const key of Object.keys(obj)) {
      if (key === 'action' || key === 'reasoning' || key === 'confidence') continue;
      if (!TARGET_KEYS.test(key)) {
        note(`ignored field "${key}"`);
        continue;
      }
      const value = obj[key];
      if (value !== anomaly.target) {
        injectionSuspected = true;
        note(`reply named ${key}=${JSON.stringify(value) ?? 'undefined'}; ignored, the target is ${anomaly.target}`);
      } else note(`ignored field "${key}" (same as the target)`);
    }

    let action: unknown = obj.action;
    if (typeof action === 'string') {
      const normalized = action
        .trim()
        .toLowerCase()
        .replace(/[\s-]+/g, '_');
      if (normalized !== action) note(`action ${JSON.stringify(action)} read as ${normalized}`);
      if (!(ACTIONS as string[]).includes(normalized)) {
        injectionSuspected = true;
        return fail(`disallowed: unknown action "${action}"`);
      }
      const allowed = allowedActionsAt(anomaly.type, rung, context.ladder);
      if (!(allowed as string[]).includes(normalized)) {
        injectionSuspected = true;
        return fail(
          `disallowed: ${normalized} is not allowed for ${anomaly.type}${rung > 0 ? ` at rung ${rung}` : ''} (allowed: ${allowed.join(', ')})`,
        );
      }
      action = normalized;
    }
    let confidence: unknown = obj.confidence;
    if (typeof confidence === 'string' && /^\s*(?:0(?:\.\d+)?|1(?:\.0+)?|\.\d+)\s*$/.test(confidence)) {
      note(`confidence "${confidence}" read as a number`);
      confidence = Number(confidence);
    }
    // Small models often answer a percentage (85, 100) where a fraction was asked for: a whole number from 2 to 100
    // is read as c/100. Anything else out of 0..1 (1.5, 1000000, -1) is refused.
    if (typeof confidence === 'number' && Number.isInteger(confidence) && confidence >= 2 && confidence <= 100) {
      note(`confidence ${confidence} read as a percentage`);
      confidence = confidence / 100;
    }
    const reply = llmReplySchema.safeParse({ action, reasoning: obj.reasoning, confidence });
    if (!reply.success) {
      const issues = reply.error.issues.map((i) => `${i.path.join('.') || '(reply)'}: ${i.message}`);
      return fail(`invalid: ${issues.join('; ')}`);
    }
    const { reasoning } = reply.data;
    if (INJECTION_TEXT.test(reasoning)) {
      injectionSuspected = true;
      note('reasoning contains instruction-like text');
    }
    if (OTHER_TARGET_TEXT.test(reasoning)) {
      injectionSuspected = true;
      note('reasoning proposes acting on infrastructure outside the target; ignored');
    }
    for (const c of context.containers) {
      if (c !== anomaly.target && c.length > 2 && reasoning.includes(c)) {
        injectionSuspected = true;
        note(`reasoning names container ${c}, not the target; ignored`);
      }
    }

    const params = deriveParams(anomaly, reply.data.action, context);
    if (!params.ok) return fail(`inapplicable: ${reply.data.action}: ${params.error}`);
    const runbook = runbookPlan(anomaly, rung, context);
    const index = ladderIndex(anomaly.type, reply.data.action, context.ladder);
    const plan = withPlanId({
      anomalyType: anomaly.type,
      action: reply.data.action,
      target: anomaly.target,
      params: params.value,
      reasoning: sanitizeUntrusted(reasoning.trim(), REASONING_MAX),
      confidence: combineConfidence(
        reply.data.confidence,
        reply.data.action === runbook.action,
        evidenceStrength(anomaly),
      ),
      source: 'llm',
      rung: reply.data.action === 'no_action' ? rung : Math.max(rung, index),
    });
    return { ok: true, value: plan, injectionSuspected, notes };
  } catch (e) {
    // Unreachable by design; the promise of never throwing outweighs a stack trace.
    return fail(`invalid: parser error (${errorMessage(e)})`);
  }
}
