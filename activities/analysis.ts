/**
 * `analyzeAnomaly`: ask the LLM (Ollama, JSON-schema constrained output) which allowed action fits an anomaly, and
 * fall back to the rule-based runbook whenever the answer cannot be used: Ollama down, slow, busy, an HTTP error,
 * an unparsable reply, a disallowed or inapplicable action. The activity never throws for an LLM problem, so the
 * healing workflow always gets a plan. The target and parameters always come from the anomaly (core/llm-plan.ts).
 */
import { Ollama } from 'ollama';
import type { AnalysisEvidence } from '../core/evidence';
import { classifyFallback } from '../core/fallback-cause';
import { buildPrompt, llmReplyJsonSchema, parsePlan } from '../core/llm-plan';
import type { Plan } from '../core/plan';
import { sanitizeUntrusted } from '../core/redact';
import { runbookPlan, withPlanId } from '../core/runbook';
import { resolveRunbook } from '../core/runbook-file';
import type { ActionType, Anomaly, AnomalyType } from '../core/types';
import type { RunbookSource } from './runbook-source';
import { withoutCredentials } from './url-credentials';

/** LLM calls one worker runs at once when not configured (a local Ollama serves requests mostly one by one). */
export const DEFAULT_LLM_CONCURRENCY = 2;

/** Anomaly types the LLM is never asked about: their only remedy is escalation. */
const NOT_CONSULTED: ReadonlySet<AnomalyType> = new Set(['llm_unavailable', 'monitoring_degraded']);

/** Why the runbook's plan was used: the first word of `Plan.fallbackReason`. */
export const FallbackReason = {
  /** The anomaly type never goes to the LLM. */
  not_consulted: 'not_consulted',
  /** No free LLM slot before the deadline. */
  busy: 'busy',
  /** Ollama could not be reached. */
  down: 'down',
  /** No answer within LLM_TIMEOUT_MS. */
  timeout: 'timeout',
  /** Ollama answered with an HTTP error. */
  error: 'error',
  /** Ollama answered that the model is not there (HTTP 404 "model ... not found": not pulled). */
  model_absent: 'model_absent',
  /** The reply could not be read as a plan. */
  invalid: 'invalid',
  /** The reply chose an action not allowed for the anomaly type (or rung). */
  disallowed: 'disallowed',
  /**
   * The reply was usable but looked manipulated (it named another target, or its reasoning carried instructions or
   * named infrastructure outside the target): nothing of it is used.
   */
  suspect: 'suspect',
  /** The reply chose an allowed action whose parameters the evidence cannot supply. */
  inapplicable: 'inapplicable',
} as const;
export type FallbackReason = (typeof FallbackReason)[keyof typeof FallbackReason];

export interface AnalysisActivitiesOptions {
  /** Ollama client (the `ollama` package). Build it with `createOllamaClient` so a timed-out request is aborted. */
  ollama: Ollama;
  /** Model name (OLLAMA_MODEL). */
  model: string;
  /** ms an analysis may wait for the LLM, queueing for a slot included (LLM_TIMEOUT_MS). */
  timeoutMs: number;
  /** Known container names (e.g. HEALTH_TARGETS), added to each call's `context.containers`. */
  containers?: readonly string[];
  /** LLM calls in flight at once from this worker; default DEFAULT_LLM_CONCURRENCY (2). */
  maxConcurrent?: number;
  /** The runbooks file (RUNBOOKS_FILE): the ladder plans are held to, the verify delay. Default: the built-in ladders. */
  runbooks?: RunbookSource;
}

export interface AnalyzeInput {
  anomaly: Anomaly;
  /** Ladder rung: 0 first, +1 after each remedy that did not heal. */
  rung: number;
  context?: {
    /** Known container names, as the workflow knows them. */
    containers?: readonly string[];
  };
  /**
   * What an SRE would look at for the anomaly's target (recent document errors, the container's last log lines),
   * gathered on the actions worker (`gatherEvidence`). Untrusted: it goes into the prompt's data fence only.
   */
  evidence?: AnalysisEvidence;
}

export interface AnalysisResult {
  plan: Plan;
  llm: {
    /** The LLM was asked. */
    used: boolean;
    /** Its reply became the plan (`plan.source === 'llm'`). */
    ok: boolean;
    /** Why not, when asked and not ok (also in `plan.fallbackReason`). */
    error?: string;
    /** ms spent on the LLM, waiting for a slot included; 0 when not asked. */
    latencyMs: number;
    /** Characters in the reply, when one came. */
    rawLength?: number;
    /** The reply named another target, a disallowed action or carried instruction-like text. */
    injectionSuspected?: boolean;
    /** What parsing repaired or ignored. */
    notes?: string[];
    /** Tokens the model generated (Ollama's eval_count), when it answered. */
    evalCount?: number;
    /** ms the model spent generating them (Ollama's eval_duration). */
    evalMs?: number;
    /** Prompt tokens the model read (Ollama's prompt_eval_count). */
    promptEvalCount?: number;
  };
}

/** A FIFO counting semaphore; `acquire` gives up at `deadline` (epoch ms) and then returns null. */
export function createSemaphore(max: number) {
  const limit = Number.isSafeInteger(max) && max > 0 ? max : 1;
  let active = 0;
  const waiting: { grant: (release: () => void) => void }[] = [];
  const release = () => {
    const next = waiting.shift();
    if (next) next.grant(once());
    else active--;
  };
  const once = () => {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      release();
    };
  };
  return {
    get active() {
      return active;
    },
    get waiting() {
      return waiting.length;
    },
    acquire(deadline: number): Promise<(() => void) | null> {
      if (active < limit) {
        active++;
        return Promise.resolve(once());
      }
      return new Promise((resolve) => {
        const waiter = {
          grant: (r: () => void) => {
            clearTimeout(timer);
            resolve(r);
          },
        };
        const timer = setTimeout(
          () => {
            const i = waiting.indexOf(waiter);
            if (i >= 0) waiting.splice(i, 1);
            resolve(null);
          },
          Math.max(0, deadline - Date.now()),
        );
        waiting.push(waiter);
      });
    },
  };
}

/**
 * An Ollama client whose HTTP requests abort after `timeoutMs` (the client itself offers no abort for non-streamed
 * calls), so a hung model does not keep a connection and an LLM slot after the analysis has moved on.
 */
export function createOllamaClient(opts: { host: string; timeoutMs: number; fetch?: typeof fetch }): Ollama {
  const base = opts.fetch ?? fetch;
  const timedFetch: typeof fetch = (input, init) => {
    const timeout = AbortSignal.timeout(opts.timeoutMs);
    const signal = init?.signal ? AbortSignal.any([init.signal, timeout]) : timeout;
    return base(input, { ...init, signal });
  };
  const { url, headers } = withoutCredentials(new URL(opts.host));
  // Without user info the host is passed as configured.
  return headers.authorization
    ? new Ollama({ host: url.toString(), fetch: timedFetch, headers })
    : new Ollama({ host: opts.host, fetch: timedFetch });
}

class LlmTimeout extends Error {}

function describeError(e: unknown): { kind: FallbackReason; message: string } {
  if (e instanceof LlmTimeout) return { kind: 'timeout', message: e.message };
  const err = e as { name?: unknown; message?: unknown; status_code?: unknown; cause?: { code?: unknown } };
  const message = typeof err?.message === 'string' ? err.message : String(e);
  if (typeof err?.status_code === 'number') {
    // The ollama client's ResponseError: Ollama answered; a 404 "model ... not found" means it is not pulled.
    const kind =
      classifyFallback(`error: HTTP ${err.status_code}: ${message}`) === 'model_absent' ? 'model_absent' : 'error';
    return { kind, message: `HTTP ${err.status_code}: ${message}` };
  }
  if (err?.name === 'TimeoutError' || err?.name === 'AbortError') return { kind: 'timeout', message };
  const code = typeof err?.cause?.code === 'string' ? ` (${err.cause.code})` : '';
  return { kind: 'down', message: `${message}${code}` };
}

/** Ollama's own counters from a chat response (durations in ns there, ms here); absent ones left out. */
function ollamaTokens(response: unknown): Pick<AnalysisResult['llm'], 'evalCount' | 'evalMs' | 'promptEvalCount'> {
  const r = (response ?? {}) as Record<string, unknown>;
  const count = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : undefined);
  const evalCount = count(r.eval_count);
  const evalNs = count(r.eval_duration);
  const promptEvalCount = count(r.prompt_eval_count);
  return {
    ...(evalCount !== undefined ? { evalCount } : {}),
    ...(evalNs !== undefined ? { evalMs: Math.round(evalNs / 1e4) / 100 } : {}),
    ...(promptEvalCount !== undefined ? { promptEvalCount } : {}),
  };
}

export function createAnalysisActivities(opts: AnalysisActivitiesOptions) {
  const slots = createSemaphore(opts.maxConcurrent ?? DEFAULT_LLM_CONCURRENCY);

  /**
   * The analysis under the anomaly's runbook, resolved at each analysis (not frozen in the workflow's input), so an
   * edited runbooks file applies to healings already running: the LLM is offered and held to its ladder, the runbook
   * plans on it, and its verify delay travels with the plan.
   */
  async function analyzeAnomaly(input: AnalyzeInput): Promise<AnalysisResult> {
    const runbook = opts.runbooks
      ? opts.runbooks.resolve(input.anomaly.type, input.anomaly.target)
      : resolveRunbook(undefined, input.anomaly.type, input.anomaly.target);
    const result = await analyzeOnLadder(input, runbook.ladder);
    if (runbook.verifyDelaySeconds === undefined) return result;
    const { id: _id, ...plan } = result.plan;
    return { ...result, plan: withPlanId({ ...plan, verifyDelaySeconds: runbook.verifyDelaySeconds }) };
  }

  async function analyzeOnLadder(input: AnalyzeInput, ladder: readonly ActionType[]): Promise<AnalysisResult> {
    const { anomaly } = input;
    const rung = Number.isSafeInteger(input.rung) && input.rung > 0 ? input.rung : 0;
    const containers = [...new Set([...(opts.containers ?? []), ...(input.context?.containers ?? [])])];
    const context = { containers, rung, evidence: input.evidence, ladder };
    const started = Date.now();
    const deadline = started + opts.timeoutMs;

    const fallback = (kind: FallbackReason, detail: string, llm: Partial<AnalysisResult['llm']> = {}) => {
      const reason = sanitizeUntrusted(`${kind}: ${detail}`, 300);
      const { id: _id, ...plan } = runbookPlan(anomaly, rung, context);
      const used = llm.used ?? true;
      return {
        plan: withPlanId({ ...plan, fallbackReason: reason, fallbackCause: classifyFallback(reason) }),
        llm: {
          ...llm,
          used,
          ok: false,
          latencyMs: used ? Date.now() - started : 0,
          ...(used ? { error: reason } : {}),
        },
      } satisfies AnalysisResult;
    };

    if (NOT_CONSULTED.has(anomaly.type)) {
      return fallback('not_consulted', `the LLM is not asked about ${anomaly.type}`, { used: false });
    }

    const release = await slots.acquire(deadline);
    if (!release) return fallback('busy', `no free LLM slot within ${opts.timeoutMs} ms`);

    let raw: string;
    let tokens: Pick<AnalysisResult['llm'], 'evalCount' | 'evalMs' | 'promptEvalCount'> = {};
    let timer: NodeJS.Timeout | undefined;
    let call: Promise<unknown> | undefined;
    try {
      const prompt = buildPrompt(anomaly, context);
      call = opts.ollama.chat({
        model: opts.model,
        messages: [
          { role: 'system', content: prompt.system },
          { role: 'user', content: prompt.user },
        ],
        format: llmReplyJsonSchema(anomaly.type, rung, ladder),
        options: { temperature: 0 },
        stream: false,
      });
      // The slot is held until the request really ends, so the cap counts requests Ollama is serving.
      void call.then(release, release);
      const timeout = new Promise<never>((_resolve, reject) => {
        timer = setTimeout(
          () => reject(new LlmTimeout(`no answer within ${opts.timeoutMs} ms`)),
          Math.max(0, deadline - Date.now()),
        );
      });
      const response = await Promise.race([call, timeout]);
      const content: unknown = (response as { message?: { content?: unknown } } | undefined)?.message?.content;
      if (typeof content !== 'string') return fallback('invalid', 'the response carries no message content');
      raw = content;
      tokens = ollamaTokens(response);
    } catch (e) {
      const { kind, message } = describeError(e);
      return fallback(kind, message);
    } finally {
      clearTimeout(timer);
      if (!call) release();
    }

    const parsed = parsePlan(raw, anomaly, context);
    const audit = {
      rawLength: raw.length,
      injectionSuspected: parsed.injectionSuspected,
      notes: parsed.notes,
      ...tokens,
    };
    if (!parsed.ok) {
      const [kind, ...rest] = parsed.error.split(': ');
      const known = Object.values(FallbackReason) as string[];
      return known.includes(kind ?? '')
        ? fallback(kind as FallbackReason, rest.join(': '), audit)
        : fallback('invalid', parsed.error, audit);
    }
    if (parsed.injectionSuspected) {
      // A reply that tried to steer the plan elsewhere is not trusted even where its action is allowed: the runbook
      // plans instead, and the attempt stays in the audit (notes, injectionSuspected).
      return fallback('suspect', parsed.notes.join('; ') || 'injection-like reply', audit);
    }
    return {
      plan: parsed.value,
      llm: { used: true, ok: true, latencyMs: Date.now() - started, ...audit },
    };
  }

  return { analyzeAnomaly };
}
