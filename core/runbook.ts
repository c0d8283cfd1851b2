/**
 * The rule-based runbook: what selfheal does about each anomaly type without an LLM, rung by rung, and the
 * parameters of every action, taken from the anomaly's evidence and nothing else. Also the plan id (a content
 * hash approvals are bound to). Pure and deterministic: it runs in activities, in tests and in the workflow
 * sandbox (no node:crypto, no clock).
 */
import { EVIDENCE_ID_CAP, LOCK_EVIDENCE_CAP, LOST_EVIDENCE_CAP, PROGRESS_SOURCE } from './detectors';
import { ALLOWED_ACTIONS, type Plan, type PlanParams } from './plan';
import { sanitizeUntrusted } from './redact';
import type { Result } from './result';
import type { ActionType, Anomaly, AnomalyType } from './types';

export interface RunbookContext {
  /**
   * Names of the containers selfheal knows (HEALTH_TARGETS, Docker inspection). A dead lock owner or worker id
   * is restarted only when it is one of these.
   */
  containers: readonly string[];
  /**
   * The ladder of the anomaly's runbook (RUNBOOKS_FILE, core/runbook-file.ts): its actions in order. Default: the
   * built-in one, ALLOWED_ACTIONS of the type.
   */
  ladder?: readonly ActionType[];
}

/**
 * Confidence of the runbook's plan for each anomaly type, 0..1: how well-understood the remedy is, not how sure
 * the detector was. With the default MIN_CONFIDENCE (0.8) the first four may run without approval when
 * AUTO_FIX_ENABLED is on; the rest always wait for a human.
 * - 0.9 stale_locks, orphaned_entries: compare-and-delete of the exact observed token / LREM of the exact ids after
 *   re-checking; cannot touch a live lease or a live entry.
 * - 0.85 stuck_documents, lost_documents: requeue is exactly-once per document and dead-letters after MAX_REQUEUES.
 * - 0.8 unhealthy_container: a restart cures a crashed or hung process, not a bad config or a dead dependency.
 * - 0.85 poison_document: POISON_CRASHES worker deaths on one document are strong evidence; quarantine stops the
 *   crash loop and only parks the document (status dead, reason kept) until a human looks.
 * - 0.6 stalled_queue: often a hung consumer (a restart helps), sometimes a dependency.
 * - 0.5 processing_time_anomaly, error_rate_spike: the cause is usually the input or a dependency, not the worker.
 *   When the detector found the workers that are bad while their peers are fine (`evidence.suspects`), restarting
 *   them is as well-understood as restarting an unhealthy container: see `runbookConfidence`.
 * - 1.0 llm_unavailable, monitoring_degraded: escalation is the only remedy and it changes nothing.
 */
export const RUNBOOK_CONFIDENCE: Record<AnomalyType, number> = {
  stale_locks: 0.9,
  orphaned_entries: 0.9,
  stuck_documents: 0.85,
  lost_documents: 0.85,
  unhealthy_container: 0.8,
  poison_document: 0.85,
  stalled_queue: 0.6,
  processing_time_anomaly: 0.5,
  error_rate_spike: 0.5,
  llm_unavailable: 1,
  monitoring_degraded: 1,
};

/** Confidence of restarting the outlier workers of a stage whose peers are fine (see `outliers` in detectors). */
export const OUTLIER_RESTART_CONFIDENCE = 0.8;

/**
 * The runbook's confidence in `action` for `anomaly`: the type's figure, raised for a restart of outlier workers
 * of an error-rate spike or a slowdown (a restart is only derivable for those types when suspects were found).
 */
export function runbookConfidence(anomaly: Anomaly, action: ActionType): number {
  const outlier =
    action === 'restart_worker' &&
    (anomaly.type === 'error_rate_spike' || anomaly.type === 'processing_time_anomaly') &&
    strings(anomaly.evidence.suspects).length > 0;
  return outlier
    ? Math.max(RUNBOOK_CONFIDENCE[anomaly.type], OUTLIER_RESTART_CONFIDENCE)
    : RUNBOOK_CONFIDENCE[anomaly.type];
}

/** One line per action: the runbook's reasoning, and the action list of the LLM prompt. */
export const ACTION_DESCRIPTIONS: Record<ActionType, string> = {
  requeue_documents:
    'put the affected documents back on their stage queue (exactly once each; dead-lettered after the requeue limit)',
  restart_worker: 'restart the worker container selfheal identified (for a dead, hung or unhealthy worker process)',
  clear_stale_locks: 'delete the exact document locks still held by a worker that has no heartbeat',
  remove_orphaned_entries: 'remove queue entries whose document is completed, dead, missing or listed twice',
  quarantine_document: 'mark the document dead so that it stops crashing workers',
  escalate_to_human: 'notify a human and change nothing automatically (when unsure, or when the cause is elsewhere)',
  no_action: 'do nothing (only when the evidence shows a false alarm)',
};

const ESCALATE: ActionType = 'escalate_to_human';
/** Container names Docker accepts; anything else in evidence is ignored. */
const CONTAINER_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const STAGE_NAME = /^[A-Za-z0-9_-]{1,64}$/;
const REASON_MAX = 300;

const normalizeRung = (rung: number): number => (Number.isSafeInteger(rung) && rung > 0 ? rung : 0);

/** The ladder in force: `ladder` (a runbook file's) when given, else the built-in ALLOWED_ACTIONS of `type`. */
export function ladderOf(type: AnomalyType, ladder?: readonly ActionType[]): readonly ActionType[] {
  return ladder ?? ALLOWED_ACTIONS[type];
}

/**
 * Actions a plan may take for `type` at `rung`. The order of the ladder (`ladder`, default ALLOWED_ACTIONS) is the
 * order of the remedies: at rung 0 every action on it; at a later rung (a remedy was tried and did not heal) only the
 * actions at or after that position, never `no_action`; `escalate_to_human` always.
 */
export function allowedActionsAt(type: AnomalyType, rung: number, ladder?: readonly ActionType[]): ActionType[] {
  const all = ladderOf(type, ladder);
  const r = normalizeRung(rung);
  const actions = r === 0 ? [...all] : all.filter((a, i) => i >= r && a !== 'no_action');
  return actions.includes(ESCALATE) ? actions : [...actions, ESCALATE];
}

/** Position of `action` on the ladder of `type` (`ladder`, default ALLOWED_ACTIONS), or -1. */
export function ladderIndex(type: AnomalyType, action: ActionType, ladder?: readonly ActionType[]): number {
  return ladderOf(type, ladder).indexOf(action);
}

const strings = (v: unknown): string[] =>
  Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string' && x.length > 0) : [];

function documentIds(v: unknown, cap = EVIDENCE_ID_CAP): number[] {
  if (!Array.isArray(v)) return [];
  const out = new Set<number>();
  for (const x of v as unknown[]) {
    const n = typeof x === 'string' && /^\d{1,15}$/.test(x) ? Number(x) : x;
    if (typeof n === 'number' && Number.isSafeInteger(n) && n > 0) out.add(n);
    if (out.size >= cap) break;
  }
  return [...out];
}

function locksOf(anomaly: Anomaly): NonNullable<PlanParams['locks']> {
  const raw = anomaly.evidence.locks;
  if (!Array.isArray(raw)) return [];
  const out: NonNullable<PlanParams['locks']> = [];
  for (const l of raw as unknown[]) {
    if (typeof l !== 'object' || l === null) continue;
    const { documentId, owner, token } = l as Record<string, unknown>;
    if (typeof documentId !== 'string' || typeof owner !== 'string' || typeof token !== 'string') continue;
    // Only locks of the owner the anomaly is about: the target is that owner, proven dead by the detector.
    if (!documentId || !token || owner !== anomaly.target) continue;
    out.push({ documentId, owner, token });
    if (out.length >= LOCK_EVIDENCE_CAP) break;
  }
  return out;
}

function entriesOf(anomaly: Anomaly): NonNullable<PlanParams['entries']> {
  const raw = anomaly.evidence.entries;
  if (!Array.isArray(raw)) return [];
  const out: NonNullable<PlanParams['entries']> = [];
  for (const e of raw as unknown[]) {
    if (typeof e !== 'object' || e === null) continue;
    const { queue, id, count } = e as Record<string, unknown>;
    if (typeof queue !== 'string' || !queue || typeof id !== 'string' || !id) continue;
    if (typeof count !== 'number' || !Number.isSafeInteger(count) || count < 1) continue;
    out.push({ queue, id, count });
    if (out.length >= EVIDENCE_ID_CAP) break;
  }
  return out;
}

/**
 * The container a restart would act on, from the anomaly alone: an unhealthy container is its own target; other
 * types name containers in `evidence.containers` (observed by the collector), or, for stuck documents, a dead
 * owner in `evidence.deadOwners` that is a known container (worker ids are not container names by default).
 */
function containerFor(anomaly: Anomaly, context: RunbookContext): string | undefined {
  if (anomaly.type === 'unhealthy_container') {
    return CONTAINER_NAME.test(anomaly.target) ? anomaly.target : undefined;
  }
  const known = new Set(context.containers);
  const candidates = [
    ...strings(anomaly.evidence.containers),
    ...strings(anomaly.evidence.deadOwners).filter((o) => known.has(o)),
  ];
  return candidates.find((c) => CONTAINER_NAME.test(c));
}

/**
 * Parameters of `action` for `anomaly`, all from the anomaly (target and evidence) and the known containers,
 * or why they cannot be derived. The LLM never supplies any of them.
 */
export function deriveParams(anomaly: Anomaly, action: ActionType, context: RunbookContext): Result<PlanParams> {
  const reason = sanitizeUntrusted(anomaly.summary, REASON_MAX);
  switch (action) {
    case 'restart_worker': {
      const container = containerFor(anomaly, context);
      if (!container) return { ok: false, error: 'no known container to restart in the evidence' };
      // A worker that died holding a document that killed a worker before: that document goes first.
      const poison =
        anomaly.type === 'unhealthy_container' ? documentIds(anomaly.evidence.poisonSuspects, EVIDENCE_ID_CAP) : [];
      // A worker hung behind a working health check: restarted while it looks healthy (see `healthDecides`).
      const hung = anomaly.type === 'unhealthy_container' && anomaly.evidence.source === PROGRESS_SOURCE;
      return {
        ok: true,
        value: { container, ...(poison.length > 0 ? { quarantineFirst: poison } : {}), ...(hung ? { hung } : {}) },
      };
    }
    case 'requeue_documents': {
      const ids = documentIds(
        anomaly.evidence.documentIds,
        anomaly.type === 'lost_documents' ? LOST_EVIDENCE_CAP : EVIDENCE_ID_CAP,
      );
      const stage =
        anomaly.type !== 'stuck_documents' && typeof anomaly.evidence.stage === 'string'
          ? anomaly.evidence.stage
          : anomaly.target;
      if (ids.length === 0) return { ok: false, error: 'no document ids in the evidence' };
      if (!STAGE_NAME.test(stage)) return { ok: false, error: 'no valid stage to requeue to' };
      return { ok: true, value: { documentIds: ids, stage } };
    }
    case 'clear_stale_locks': {
      const locks = locksOf(anomaly);
      return locks.length > 0
        ? { ok: true, value: { locks } }
        : { ok: false, error: 'no lock of the dead owner with its token in the evidence' };
    }
    case 'remove_orphaned_entries': {
      const entries = entriesOf(anomaly);
      return entries.length > 0 ? { ok: true, value: { entries } } : { ok: false, error: 'no entries in the evidence' };
    }
    case 'quarantine_document': {
      const ids = documentIds(anomaly.evidence.documentIds);
      return ids.length > 0
        ? { ok: true, value: { documentIds: ids, reason } }
        : { ok: false, error: 'no document ids in the evidence' };
    }
    case 'escalate_to_human':
      return { ok: true, value: { reason } };
    case 'no_action':
      return { ok: true, value: {} };
  }
}

/**
 * The runbook's plan for `anomaly` at `rung` (0 = first remedy; the workflow passes rung + 1 after a failed
 * verification). It walks the ladder (`context.ladder`, default ALLOWED_ACTIONS order) from `rung`, skipping `no_action` and any remedy whose
 * parameters the evidence cannot supply, and ends at `escalate_to_human`, also past the last remedy. The plan's
 * `rung` is the ladder position of the action chosen (at least the `rung` asked for).
 */
export function runbookPlan(anomaly: Anomaly, rung: number, context: RunbookContext): Plan {
  const r = normalizeRung(rung);
  const ladder = ladderOf(anomaly.type, context.ladder);
  const skipped: string[] = [];
  for (let i = r; i < ladder.length; i++) {
    const action = ladder[i]!;
    if (action === 'no_action') continue;
    const params = deriveParams(anomaly, action, context);
    if (!params.ok) {
      skipped.push(`${action} skipped: ${params.error}.`);
      continue;
    }
    return runbookPlanOf(anomaly, action, params.value, i, skipped);
  }
  const params = deriveParams(anomaly, ESCALATE, context);
  skipped.push(`no remedy left at rung ${r}.`);
  return runbookPlanOf(anomaly, ESCALATE, params.ok ? params.value : {}, r, skipped);
}

function runbookPlanOf(anomaly: Anomaly, action: ActionType, params: PlanParams, rung: number, skipped: string[]) {
  const reasoning = [`Runbook for ${anomaly.type}, rung ${rung}: ${ACTION_DESCRIPTIONS[action]}.`, ...skipped].join(
    ' ',
  );
  return withPlanId({
    anomalyType: anomaly.type,
    action,
    target: anomaly.target,
    params,
    reasoning,
    confidence: runbookConfidence(anomaly, action),
    source: 'runbook',
    rung,
  });
}

/** JSON with object keys sorted at every level (undefined members dropped, as JSON.stringify does). */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`;
  const record = value as Record<string, unknown>;
  const members = Object.keys(record)
    .filter((k) => record[k] !== undefined)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${canonicalJson(record[k])}`);
  return `{${members.join(',')}}`;
}

const FNV_OFFSET = 0xcbf29ce484222325n;
const FNV_PRIME = 0x100000001b3n;
const MASK_64 = 0xffffffffffffffffn;

/** 64-bit FNV-1a over the UTF-8 bytes of `text`, as 16 hex digits. Not cryptographic: an identity, not a MAC. */
export function fnv1a64(text: string): string {
  let hash = FNV_OFFSET;
  const byte = (b: number) => {
    hash = ((hash ^ BigInt(b)) * FNV_PRIME) & MASK_64;
  };
  for (const ch of text) {
    const cp = ch.codePointAt(0)!;
    if (cp < 0x80) byte(cp);
    else if (cp < 0x800) {
      byte(0xc0 | (cp >> 6));
      byte(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      byte(0xe0 | (cp >> 12));
      byte(0x80 | ((cp >> 6) & 0x3f));
      byte(0x80 | (cp & 0x3f));
    } else {
      byte(0xf0 | (cp >> 18));
      byte(0x80 | ((cp >> 12) & 0x3f));
      byte(0x80 | ((cp >> 6) & 0x3f));
      byte(0x80 | (cp & 0x3f));
    }
  }
  return hash.toString(16).padStart(16, '0');
}

/** Stable id of a plan's content (every field but `id`): the same plan always gets the same id. */
export function planId(plan: Omit<Plan, 'id'>): string {
  const { id: _ignored, ...content } = plan as Plan;
  return fnv1a64(canonicalJson(content));
}

/** The plan with its content id. */
export function withPlanId(plan: Omit<Plan, 'id'>): Plan {
  return { ...plan, id: planId(plan) };
}
