/**
 * Escalation webhooks: the body (built by core/notify.ts in the configured format) and its delivery, retried with a
 * bounded exponential back-off inside the activity.
 *
 * Delivery: up to `attempts` POSTs (default 4), each with its own timeout (default 5 s); between them 0.5, 1, 2 s
 * (doubling from `backoffMs`). Retried: network errors and timeouts, 5xx, 429. A `Retry-After` (seconds or an HTTP
 * date) on a 429 or 5xx replaces the back-off when longer, up to `maxRetryAfterMs` (default 10 s); a receiver that
 * asks for more is not hammered: delivery stops there, failed. Any other 4xx is final. Worst case with the defaults:
 * 4 × 5 s + 3 × 10 s = 50 s, inside the actions' 2-minute start-to-close timeout.
 *
 * The webhook URL is a secret (a Slack webhook URL is its own credential): it is never logged, never put into a
 * result, and is cut out of error messages.
 */
import { Context } from '@temporalio/activity';
import type pg from 'pg';
import {
  buildEscalationBody,
  type EscalationInput,
  type WebhookFormat,
  WebhookFormat as Formats,
} from '../core/notify';

export { WebhookFormat } from '../core/notify';

/** One POST of a delivery, as recorded in the action's result. */
export interface WebhookTry {
  attempt: number;
  /** HTTP status, when something answered. */
  status?: number;
  /** Network error or timeout, when nothing answered. */
  error?: string;
  /** Milliseconds waited before the next attempt (absent on the last one). */
  retryInMs?: number;
  /** Why there is no next attempt, when delivery gave up early. */
  final?: string;
}

/** Outcome of a delivery, recorded in the escalation's result details. */
export interface WebhookDelivery {
  webhook: 'delivered' | 'failed' | 'not configured';
  format?: WebhookFormat;
  /** POSTs made. */
  attempts: number;
  /** The last HTTP status received (absent when nothing ever answered). */
  status?: number;
  /** The last error, when not delivered. */
  error?: string;
  tries: WebhookTry[];
}

export interface WebhookOptions {
  /** Attempts in all, at least 1. Default 4. */
  attempts?: number;
  /** Milliseconds one POST may take. Default 5000. */
  timeoutMs?: number;
  /** Milliseconds before the 2nd attempt; doubled before each next one. Default 500. */
  backoffMs?: number;
  /** Longest `Retry-After` honoured, in milliseconds; a longer one ends the delivery. Default 10000. */
  maxRetryAfterMs?: number;
  /** How waiting is done (tests record the delays instead of waiting). Default: a timer, cut short by `signal`. */
  sleep?: (ms: number) => Promise<void>;
  /** Stops waiting and sending (the activity's cancellation). */
  signal?: AbortSignal;
  /** Receives one record per attempt (the activity logs them). */
  onTry?: (t: WebhookTry) => void;
  /** For `Retry-After` dates. Default Date.now. */
  now?: () => number;
}

/** Milliseconds a `Retry-After` header asks for, or undefined when absent or unreadable. */
export function parseRetryAfter(value: string | null, now: number): number | undefined {
  if (value === null) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  // HTTP dates (all three RFC 9110 forms) start with the day name; anything else is unreadable.
  if (!/^[A-Za-z]/.test(v)) return undefined;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** First line of an error (with its cause: undici says `fetch failed` and puts the reason there), URL removed. */
function describeError(err: unknown, url: string): string {
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  let text =
    e?.name === 'TimeoutError'
      ? 'timeout'
      : `${e?.message ?? String(err)}${e?.cause ? `: ${e.cause.code ?? e.cause.message ?? ''}` : ''}`;
  text = text.split('\n')[0] ?? '';
  let origin = url;
  try {
    origin = new URL(url).origin;
  } catch {
    /* keep */
  }
  return text.split(url).join(origin).slice(0, 300);
}

function abortableSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason as Error);
    const timer = setTimeout(done, ms);
    function done() {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }
    function onAbort() {
      clearTimeout(timer);
      reject(signal!.reason as Error);
    }
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** POSTs `body` as JSON to `url` with the retries above. Never throws for a failed delivery; it says so. */
export async function postJsonWithRetry(
  url: string,
  body: unknown,
  opts: WebhookOptions = {},
): Promise<WebhookDelivery> {
  const attempts = Math.max(1, opts.attempts ?? 4);
  const timeoutMs = opts.timeoutMs ?? 5_000;
  const backoffMs = opts.backoffMs ?? 500;
  const maxRetryAfterMs = opts.maxRetryAfterMs ?? 10_000;
  const sleep = opts.sleep ?? ((ms: number) => abortableSleep(ms, opts.signal));
  const now = opts.now ?? Date.now;
  const payload = JSON.stringify(body);
  const tries: WebhookTry[] = [];
  let status: number | undefined;
  let error: string | undefined;
  for (let attempt = 1; attempt <= attempts; attempt++) {
    const t: WebhookTry = { attempt };
    tries.push(t);
    let retryAfter: number | undefined;
    try {
      const timeout = AbortSignal.timeout(timeoutMs);
      const res = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'user-agent': 'selfheal' },
        body: payload,
        signal: opts.signal ? AbortSignal.any([timeout, opts.signal]) : timeout,
      });
      await res.body?.cancel().catch(() => undefined);
      status = t.status = res.status;
      if (res.ok) {
        opts.onTry?.(t);
        return { webhook: 'delivered', attempts: attempt, status, tries };
      }
      error = `HTTP ${res.status}`;
      if (res.status < 500 && res.status !== 429) {
        // A client error other than rate limiting will not get better by repeating it.
        t.final = 'client error: not retried';
        opts.onTry?.(t);
        break;
      }
      retryAfter = parseRetryAfter(res.headers.get('retry-after'), now());
    } catch (err) {
      if (opts.signal?.aborted) throw err;
      error = t.error = describeError(err, url);
    }
    if (attempt < attempts) {
      const backoff = backoffMs * 2 ** (attempt - 1);
      if (retryAfter !== undefined && retryAfter > maxRetryAfterMs) {
        t.final = `Retry-After ${Math.ceil(retryAfter / 1000)} s exceeds the ${maxRetryAfterMs / 1000} s bound`;
        opts.onTry?.(t);
        break;
      }
      t.retryInMs = Math.max(backoff, retryAfter ?? 0);
      opts.onTry?.(t);
      await sleep(t.retryInMs);
    } else {
      opts.onTry?.(t);
    }
  }
  return {
    webhook: 'failed',
    attempts: tries.length,
    ...(status !== undefined ? { status } : {}),
    ...(error ? { error } : {}),
    tries,
  };
}

export interface EscalationNotifier {
  /** Builds the body for the escalation and delivers it; `not configured` when there is no URL. */
  notify(input: EscalationInput): Promise<WebhookDelivery>;
}

export interface NotifierConfig extends Omit<WebhookOptions, 'signal' | 'onTry'> {
  /** ESCALATION_WEBHOOK_URL. A secret. */
  url?: string;
  /** ESCALATION_WEBHOOK_FORMAT. Default json. */
  format?: WebhookFormat;
}

/** True inside a running activity (Context.current() throws elsewhere). */
function activityContext(): Context | undefined {
  try {
    return Context.current();
  } catch {
    return undefined;
  }
}

/**
 * The escalation notifier. Inside an activity it follows the activity's cancellation, heartbeats between attempts
 * and logs each attempt through the activity logger (so the line carries workflowId and runId).
 */
export function createEscalationNotifier(config: NotifierConfig): EscalationNotifier {
  const format = config.format ?? Formats.json;
  return {
    async notify(input) {
      if (!config.url) return { webhook: 'not configured', attempts: 0, tries: [] };
      const ctx = activityContext();
      const delivery = await postJsonWithRetry(config.url, buildEscalationBody(format, input), {
        ...config,
        signal: ctx?.cancellationSignal,
        onTry: (t) => {
          ctx?.heartbeat({ webhookAttempt: t.attempt });
          const ok = t.status !== undefined && t.status >= 200 && t.status < 300;
          // `webhookAttempt`, not `attempt`: the activity logger's own `attempt` is the activity's retry count.
          const { attempt, ...rest } = t;
          ctx?.log[ok ? 'info' : 'warn'](ok ? 'escalation webhook delivered' : 'escalation webhook attempt failed', {
            format,
            webhookAttempt: attempt,
            ...rest,
          });
        },
      });
      return { ...delivery, format };
    },
  };
}

/** The anomaly facts of a healing run, from its `detected` row in `healing_log` (none when it has no such row). */
export async function loadDetectedAnomaly(
  pool: Pick<pg.Pool, 'query'>,
  workflowId: string,
  runId: string,
): Promise<EscalationInput['anomaly']> {
  const { rows } = await pool.query<{ params: { severity?: unknown; summary?: unknown; evidence?: unknown } }>(
    `SELECT params FROM healing_log WHERE workflow_id = $1 AND run_id = $2 AND step = 'detected'
      ORDER BY id DESC LIMIT 1`,
    [workflowId, runId],
  );
  const p = rows[0]?.params;
  if (!p) return undefined;
  return {
    ...(typeof p.severity === 'string' ? { severity: p.severity } : {}),
    ...(typeof p.summary === 'string' ? { summary: p.summary } : {}),
    ...(p.evidence && typeof p.evidence === 'object' ? { evidence: p.evidence as Record<string, unknown> } : {}),
  };
}
