/**
 * Escalation notifications: the facts a human needs, and the two webhook bodies built from them
 * (ESCALATION_WEBHOOK_FORMAT): `json`, a stable documented object, and `slack`, `{ text, blocks }` for a Slack
 * incoming webhook (or anything that speaks its format: Mattermost, Rocket.Chat, Discord's /slack endpoint).
 *
 * Pure: no I/O, no clock (the caller passes `at`). Every string that reaches a body went through
 * `sanitizeUntrusted` (secrets redacted, control characters and backticks neutralized, length bounded), because
 * reasons, LLM reasoning and evidence carry text written by the pipeline or a model. Object keys that name a secret
 * (`token`, `password`...) have their value replaced, so a lock token observed by a detector never leaves.
 */
import type { Plan } from './plan';
import { REDACTED, sanitizeUntrusted, SECRET_KEY_RE } from './redact';

export const WebhookFormat = { json: 'json', slack: 'slack' } as const;
export type WebhookFormat = (typeof WebhookFormat)[keyof typeof WebhookFormat];

/** `schema` of the JSON body: bumped only when a field changes meaning or goes away (new fields may appear). */
export const ESCALATION_SCHEMA = 'selfheal.escalation.v1';

/** Bounds of untrusted text in a notification (characters). */
const REASON_MAX = 1_000;
const SHORT_MAX = 200;
const ITEM_MAX = 300;
const ARRAY_MAX = 20;
const KEYS_MAX = 30;
const DEPTH_MAX = 4;
/** Slack refuses a section text over 3000 characters and a field over 2000. */
const SLACK_SECTION_MAX = 2_900;
const SLACK_FIELD_MAX = 1_900;

/** What an escalation is about, as the actions worker knows it (plan from the workflow, the rest from the run). */
export interface EscalationInput {
  workflowId: string;
  runId?: string;
  namespace?: string;
  plan: Plan;
  /** From the healing's `detected` row, when there is one. */
  anomaly?: { severity?: string; summary?: string; evidence?: Record<string, unknown> };
  /** Base URL of the Temporal Web UI (TEMPORAL_UI_URL), for a link to the run. */
  webUiUrl?: string;
  /** PUBLIC_URL: selfheal's HTTP server as people reach it, for the healing's page and its decision endpoints. */
  publicUrl?: string;
  /** Epoch ms of the escalation. */
  at: number;
  /**
   * The healing waits for a human's decision on `plan` (event `approval_requested`, with the commands that approve or
   * reject exactly that plan). Otherwise the healing ended escalated (event `escalation`): nothing waits for a
   * decision and no approve or reject command is offered.
   */
  awaitingApproval?: boolean;
  /**
   * A restart selfheal carried out on its own (event `restarted`, as autoheal's webhook tells each restart): what the
   * restart action reported. Nothing waits for a decision.
   */
  restarted?: { outcome: string; details: Record<string, unknown> };
}

/** The commands a human runs next; approve and reject only while the healing waits for a decision. */
export interface EscalationCommands {
  approve: string | null;
  reject: string | null;
  show: string;
}

/**
 * The generic JSON body (ESCALATION_WEBHOOK_FORMAT=json). Field meanings are stable under `schema`
 * `selfheal.escalation.v1`; strings are plain text (not HTML-escaped: a receiver that renders HTML escapes them).
 */
export interface EscalationJson {
  schema: typeof ESCALATION_SCHEMA;
  /**
   * `approval_requested`: a healing waits for a decision on `plan`; `escalation`: it ended, a human takes over;
   * `restarted`: selfheal restarted a container on its own (for the record; `result` says how it went).
   */
  event: 'escalation' | 'approval_requested' | 'restarted';
  /** One plain-text paragraph with everything below, for receivers that only show `text`. */
  text: string;
  workflowId: string;
  runId: string | null;
  namespace: string | null;
  anomalyType: string;
  target: string;
  /** `info`, `warning`, `critical`, or null when the healing's detection is not on record. */
  severity: string | null;
  /** The anomaly's one-line summary, or null. */
  summary: string | null;
  /** Why a human is needed. */
  reason: string;
  /** The plan being escalated (params with secret-named values replaced and long lists cut). */
  plan: {
    id: string;
    anomalyType: string;
    action: string;
    target: string;
    params: Record<string, unknown>;
    reasoning: string;
    confidence: number;
    source: string;
    rung: number;
    fallbackReason?: string;
  };
  /** The detector's evidence, bounded the same way, or null. */
  evidence: Record<string, unknown> | null;
  commands: EscalationCommands;
  /** Link to the run in the Temporal Web UI, or null when TEMPORAL_UI_URL is not set. */
  webUiUrl: string | null;
  /** Only with PUBLIC_URL: the healing on selfheal's HTTP server (`GET` answers its state). */
  url?: string;
  /**
   * Only with PUBLIC_URL, while the healing waits for a decision: the endpoints that approve or reject (`POST`
   * `{by, planId, reason?}`, see the README's "Approve over HTTP"); null when nothing waits.
   */
  endpoints?: { approve: string; reject: string } | null;
  /** Epoch ms. */
  at: number;
  /** For `restarted`: the restart's outcome and details (bounded like the evidence); absent otherwise. */
  result?: { outcome: string; details: Record<string, unknown> };
}

/** A Slack Block Kit body: `text` is the notification fallback, `blocks` what the channel shows. */
export interface SlackBody {
  text: string;
  blocks: SlackBlock[];
}
export type SlackBlock =
  | { type: 'header'; text: { type: 'plain_text'; text: string; emoji: false } }
  | { type: 'section'; text: { type: 'mrkdwn'; text: string } }
  | { type: 'section'; fields: { type: 'mrkdwn'; text: string }[] }
  | { type: 'context'; elements: { type: 'mrkdwn'; text: string }[] }
  | { type: 'divider' };

const clean = (text: unknown, max: number): string => sanitizeUntrusted(typeof text === 'string' ? text : '', max);

/** Evidence and params made safe: strings sanitized, lists and objects bounded, secret-named keys hidden. */
export function sanitizeForNotification(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return sanitizeUntrusted(value, ITEM_MAX);
  if (typeof value === 'number') return Number.isFinite(value) ? value : null;
  if (typeof value === 'boolean' || value === null) return value;
  if (typeof value !== 'object') return null;
  if (depth >= DEPTH_MAX) return '[…]';
  if (Array.isArray(value)) {
    const items = value.slice(0, ARRAY_MAX).map((v) => sanitizeForNotification(v, depth + 1));
    if (value.length > ARRAY_MAX) items.push(`…[${value.length - ARRAY_MAX} more]`);
    return items;
  }
  const out: Record<string, unknown> = {};
  const keys = Object.keys(value);
  for (const key of keys.slice(0, KEYS_MAX)) {
    out[sanitizeUntrusted(key, 60)] = SECRET_KEY_RE.test(key)
      ? REDACTED
      : sanitizeForNotification((value as Record<string, unknown>)[key], depth + 1);
  }
  if (keys.length > KEYS_MAX) out['…'] = `${keys.length - KEYS_MAX} more fields`;
  return out;
}

/** Workflow ids are ours (`heal-<type>-<target>`, sanitized); anything else is quoted for a shell. */
function shellArg(s: string): string {
  return /^[A-Za-z0-9:._@/-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** With `planId` (a decision is awaited), the commands that approve or reject exactly that plan. */
export function escalationCommands(workflowId: string, planId?: string): EscalationCommands {
  const id = shellArg(clean(workflowId, SHORT_MAX));
  const plan = planId ? ` --plan ${shellArg(clean(planId, SHORT_MAX))}` : '';
  return {
    approve: planId ? `selfheal approve ${id} --by NAME${plan}` : null,
    reject: planId ? `selfheal reject ${id} --by NAME --reason TEXT${plan}` : null,
    show: `selfheal show ${id}`,
  };
}

function headline(e: { event: EscalationJson['event']; anomalyType: string }): string {
  if (e.event === 'restarted') return `selfheal restarted a container: ${e.anomalyType}`;
  return e.event === 'approval_requested'
    ? `selfheal asks for approval: ${e.anomalyType}`
    : `selfheal needs a human: ${e.anomalyType}`;
}

/** What the last line of a notice says about the run: the commands that decide, or that nothing waits. */
function runLine(e: Pick<EscalationJson, 'event' | 'commands' | 'workflowId' | 'result'>): string {
  if (e.commands.approve && e.commands.reject) {
    return `Workflow ${e.workflowId}. Approve: \`${e.commands.approve}\`  Reject: \`${e.commands.reject}\``;
  }
  if (e.event === 'restarted') {
    return `Workflow ${e.workflowId} restarted it (${e.result?.outcome ?? 'done'}) and verifies next. Details: \`${e.commands.show}\``;
  }
  return `Workflow ${e.workflowId} ended escalated: nothing waits for approval. Details: \`${e.commands.show}\``;
}

/** The healing's URL on selfheal's HTTP server (PUBLIC_URL), or null. */
export function healingUrl(base: string | undefined, workflowId: string): string | null {
  if (!base) return null;
  return `${base.replace(/\/+$/, '')}/healings/${encodeURIComponent(workflowId)}`;
}

/** The run's page in the Temporal Web UI (v2 routes), or null. */
export function webUiLink(base: string | undefined, namespace?: string, workflowId?: string, runId?: string) {
  if (!base || !namespace || !workflowId) return null;
  const root = base.replace(/\/+$/, '');
  const run = runId ? `/${encodeURIComponent(runId)}` : '';
  return `${root}/namespaces/${encodeURIComponent(namespace)}/workflows/${encodeURIComponent(workflowId)}${run}/history`;
}

function summaryText(e: Omit<EscalationJson, 'text'>): string {
  const parts = [`${headline(e)} on ${e.target}${e.severity ? ` (${e.severity})` : ''}: ${e.reason}`];
  if (e.summary) parts.push(`Anomaly: ${e.summary}`);
  parts.push(`Plan ${e.plan.id}: ${e.plan.action} (${e.plan.source}, confidence ${e.plan.confidence.toFixed(2)}).`);
  parts.push(runLine(e));
  if (e.endpoints) parts.push(`Over HTTP: POST ${e.endpoints.approve} or ${e.endpoints.reject}`);
  if (e.url) parts.push(`Healing: ${e.url}`);
  if (e.webUiUrl) parts.push(`Web UI: ${e.webUiUrl}`);
  return parts.join('\n');
}

/** `url` and `endpoints` when PUBLIC_URL is set; nothing otherwise (the v1 body is unchanged without it). */
function publicLinks(input: EscalationInput): Pick<EscalationJson, 'url' | 'endpoints'> {
  const url = healingUrl(input.publicUrl, input.workflowId);
  if (!url) return {};
  const waiting = input.awaitingApproval && !input.restarted;
  return { url, endpoints: waiting ? { approve: `${url}/approve`, reject: `${url}/reject` } : null };
}

/** The generic JSON body. */
export function buildEscalationJson(input: EscalationInput): EscalationJson {
  const { plan } = input;
  const workflowId = clean(input.workflowId, SHORT_MAX);
  const runId = input.runId ? clean(input.runId, SHORT_MAX) : null;
  const namespace = input.namespace ? clean(input.namespace, SHORT_MAX) : null;
  const reason = clean(plan.params?.reason || plan.reasoning || 'no reason given', REASON_MAX);
  const params = sanitizeForNotification(plan.params ?? {}) as Record<string, unknown>;
  const evidence = input.anomaly?.evidence
    ? (sanitizeForNotification(input.anomaly.evidence) as Record<string, unknown>)
    : null;
  const body: Omit<EscalationJson, 'text'> = {
    schema: ESCALATION_SCHEMA,
    event: input.restarted ? 'restarted' : input.awaitingApproval ? 'approval_requested' : 'escalation',
    workflowId,
    runId,
    namespace,
    anomalyType: clean(plan.anomalyType, SHORT_MAX),
    target: clean(plan.target, SHORT_MAX),
    severity: input.anomaly?.severity ? clean(input.anomaly.severity, 20) : null,
    summary: input.anomaly?.summary ? clean(input.anomaly.summary, REASON_MAX) : null,
    reason,
    plan: {
      id: clean(plan.id, SHORT_MAX),
      anomalyType: clean(plan.anomalyType, SHORT_MAX),
      action: clean(plan.action, SHORT_MAX),
      target: clean(plan.target, SHORT_MAX),
      params,
      reasoning: clean(plan.reasoning, REASON_MAX),
      confidence: Number.isFinite(plan.confidence) ? plan.confidence : 0,
      source: clean(plan.source, 20),
      rung: Number.isSafeInteger(plan.rung) ? plan.rung : 0,
      ...(plan.fallbackReason ? { fallbackReason: clean(plan.fallbackReason, REASON_MAX) } : {}),
    },
    evidence,
    commands: escalationCommands(input.workflowId, input.awaitingApproval ? plan.id : undefined),
    webUiUrl: webUiLink(input.webUiUrl, input.namespace, input.workflowId, input.runId),
    ...publicLinks(input),
    at: input.at,
    ...(input.restarted
      ? {
          result: {
            outcome: clean(input.restarted.outcome, 40),
            details: sanitizeForNotification(input.restarted.details) as Record<string, unknown>,
          },
        }
      : {}),
  };
  return { ...body, text: summaryText(body) };
}

/**
 * Text for Slack mrkdwn: `&`, `<` and `>` escaped as Slack requires, which also turns `<!channel>` mentions and
 * `<url|label>` links in untrusted text into inert text. Backticks are gone already (sanitizeUntrusted).
 */
export function slackEscape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

const cut = (text: string, max: number) => (text.length <= max ? text : `${text.slice(0, max - 1)}…`);

/** Escaped for Slack, then cut to `max` characters without leaving half an entity (`&am`) at the end. */
function escCut(text: string, max: number): string {
  const escaped = slackEscape(text);
  if (escaped.length <= max) return escaped;
  return `${escaped.slice(0, max - 1).replace(/&[a-z]{0,3}$/, '')}…`;
}

/** One line per evidence field, values as compact JSON, bounded. */
function evidenceLines(evidence: Record<string, unknown> | null, max: number): string {
  if (!evidence || Object.keys(evidence).length === 0) return '';
  const lines = Object.entries(evidence).map(([k, v]) => `• ${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`);
  return cut(lines.join('\n'), max);
}

/** The Slack body, built from the same facts as the JSON one. */
export function buildEscalationSlack(input: EscalationInput): SlackBody {
  const e = buildEscalationJson(input);
  const esc = escCut;
  const planLine =
    `*${esc(e.plan.action, SHORT_MAX)}* proposed by ${esc(e.plan.source, 20)}, confidence ` +
    `${e.plan.confidence.toFixed(2)}, rung ${e.plan.rung}, plan \`${esc(e.plan.id, SHORT_MAX)}\`` +
    (e.plan.reasoning ? `\n${esc(e.plan.reasoning, REASON_MAX)}` : '') +
    (e.plan.fallbackReason ? `\n_runbook used: ${esc(e.plan.fallbackReason, SHORT_MAX)}_` : '');
  const evidence = evidenceLines(e.evidence, SLACK_SECTION_MAX);
  const blocks: SlackBlock[] = [
    {
      type: 'header',
      text: { type: 'plain_text', text: cut(headline(e), 150), emoji: false },
    },
    {
      type: 'section',
      fields: [
        { type: 'mrkdwn', text: `*Anomaly*\n${esc(e.anomalyType, SLACK_FIELD_MAX)}` },
        { type: 'mrkdwn', text: `*Target*\n${esc(e.target, SLACK_FIELD_MAX)}` },
        { type: 'mrkdwn', text: `*Severity*\n${esc(e.severity ?? 'unknown', 20)}` },
        { type: 'mrkdwn', text: `*Workflow*\n${esc(e.workflowId, SLACK_FIELD_MAX)}` },
      ],
    },
    { type: 'section', text: { type: 'mrkdwn', text: `*Reason*\n${esc(e.reason, SLACK_SECTION_MAX)}` } },
  ];
  if (e.summary) {
    blocks.push({ type: 'section', text: { type: 'mrkdwn', text: `*Summary*\n${esc(e.summary, SLACK_SECTION_MAX)}` } });
  }
  blocks.push({ type: 'section', text: { type: 'mrkdwn', text: `*Plan*\n${cut(planLine, SLACK_SECTION_MAX)}` } });
  if (evidence) {
    blocks.push({ type: 'section', text: { type: 'mrkdwn', text: `*Evidence*\n${esc(evidence, SLACK_SECTION_MAX)}` } });
  }
  blocks.push({ type: 'divider' });
  blocks.push({
    type: 'section',
    text: {
      type: 'mrkdwn',
      text:
        (e.commands.approve && e.commands.reject
          ? `*Approve:* \`${slackEscape(e.commands.approve)}\`\n*Reject:* \`${slackEscape(e.commands.reject)}\`\n`
          : e.event === 'restarted'
            ? `_Restarted (${esc(e.result?.outcome ?? 'done', 40)}); the healing verifies next._\n`
            : '_The healing ended escalated: nothing waits for approval._\n') +
        `*Details:* \`${slackEscape(e.commands.show)}\``,
    },
  });
  if (e.endpoints) {
    blocks.push({
      type: 'section',
      text: {
        type: 'mrkdwn',
        text: `*Over HTTP:* \`POST ${slackEscape(e.endpoints.approve)}\` or \`POST ${slackEscape(e.endpoints.reject)}\``,
      },
    });
  }
  // Links we built from our own config and encoded ids: `|` and `>` are encoded away all the same.
  const link = (url: string, label: string) => ({
    type: 'mrkdwn' as const,
    text: `<${url.replace(/[|>]/g, encodeURIComponent)}|${label}>`,
  });
  const links = [
    ...(e.url ? [link(e.url, 'Open in selfheal')] : []),
    ...(e.webUiUrl ? [link(e.webUiUrl, 'Open in Temporal Web UI')] : []),
  ];
  if (links.length > 0) blocks.push({ type: 'context', elements: links });
  const fallback = `${headline(e)} on ${e.target}${e.severity ? ` (${e.severity})` : ''}: ${e.reason}`;
  return { text: esc(fallback, SLACK_SECTION_MAX), blocks };
}

/** The webhook body in the configured format. */
export function buildEscalationBody(format: WebhookFormat, input: EscalationInput): EscalationJson | SlackBody {
  return format === 'slack' ? buildEscalationSlack(input) : buildEscalationJson(input);
}
