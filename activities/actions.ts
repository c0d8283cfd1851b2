/**
 * The remediation actions (DESIGN.md §5). They run on the selfheal-actions task queue, whose worker is the only
 * process with a Docker client.
 *
 * Every action:
 * - takes `{ plan, idempotencyKey }` and returns a JSON `ActionResult`;
 * - first looks for the `executed` row of its idempotency key in `healing_log` and, when there is one, returns the
 *   recorded result without acting again;
 * - re-reads the live state before acting, and does nothing when the problem is gone;
 * - writes the `executed` row itself, where it acts: for the Postgres actions in the same transaction as the change
 *   (a crash can neither act twice nor record without acting) when `healing_log` and `documents` share a database;
 *   when they do not (SELFHEAL_DATABASE_URL set), the change commits first and its row right after, inside the
 *   row's transaction (see inTransaction); for Docker and Redis actions right after the call returns (the remaining
 *   window is described at each of them).
 *
 * Permanent failures are `ApplicationFailure.nonRetryable(message, type)` with a type of `ActionErrorType`;
 * transient ones (a database or engine that does not answer) throw plain errors, so Temporal retries them.
 */
import { ApplicationFailure, Context } from '@temporalio/activity';
import type Docker from 'dockerode';
import type { Redis } from 'ioredis';
import type pg from 'pg';
import pino from 'pino';
import type { HealthTarget } from '../core/config';
import { STAGES, type Keys } from '../core/keys';
import { HEALTH_VISIBLE_TYPES, type Plan } from '../core/plan';
import { escalationCommands } from '../core/notify';
import { containerAllowed } from '../core/safety';
import { isHealthyStatus } from '../core/snapshot';
import type { ActionType } from '../core/types';
import { CLEAR_STALE_LOCKS, REMOVE_ENTRIES, REQUEUE_CHUNK, REQUEUE_LOST_CHUNK } from './actions-lua';
import { createEscalationNotifier, loadDetectedAnomaly, type WebhookFormat } from './notify';

export const ActionOutcome = {
  /** The action was carried out. */
  done: 'done',
  /** Live state showed the problem gone (or never there): nothing was changed. */
  nothing_to_do: 'nothing_to_do',
  /** Some of it was carried out (documents beyond the cap, a webhook not delivered, health not back in time). */
  partial: 'partial',
  /** Not allowed here (container not on the allow list, or on the deny list): nothing was called. */
  refused: 'refused',
  /** Carried out, and the result is known to be bad. */
  failed: 'failed',
} as const;
export type ActionOutcome = (typeof ActionOutcome)[keyof typeof ActionOutcome];

/** What an action did. Plain JSON. */
export interface ActionResult {
  action: ActionType;
  outcome: ActionOutcome;
  details: Record<string, unknown>;
  /** A human must look (documents dead-lettered, for instance), whatever the verification says. */
  escalate?: boolean;
}

export interface ActionInput {
  plan: Plan;
  /** One per intended execution: retries of the same execution carry the same key. */
  idempotencyKey: string;
  /** Written as `decided_by` of the executed row; default the plan's source (`llm` or `runbook`). */
  decidedBy?: string;
}

/** `type` of the non-retryable failures of the actions. */
export const ActionErrorType = {
  /** The plan does not fit the action (wrong action, missing or malformed parameters). */
  invalid_input: 'invalid_input',
  /** The container to restart does not exist. */
  container_not_found: 'container_not_found',
} as const;
export type ActionErrorType = (typeof ActionErrorType)[keyof typeof ActionErrorType];

export interface ActionConfig {
  /** MAX_REQUEUES: a document requeued this many times is dead-lettered instead of requeued again. */
  maxRequeues: number;
  /** Documents one requeue or quarantine call handles at most; the rest of a larger plan is left (`partial`). */
  requeueCap: number;
  /** Seconds Docker gives a container to stop before killing it, on restart (RESTART_STOP_TIMEOUT). */
  restartStopTimeoutSeconds: number;
  /** LOST_DOCUMENT_THRESHOLD: a lost document is requeued only if untouched this long. Default 600. */
  lostDocumentSeconds?: number;
  /** PIPELINE_STAGES: whose queues a lost document must be in none of. Default the reference stages. */
  stages?: readonly string[];
  /** HEALTH_TARGETS: the health URL of each container, by container name. */
  healthTargets: HealthTarget[];
  /** ESCALATION_WEBHOOK_URL: POSTed on escalation when set. A secret: never logged. */
  escalationWebhookUrl?: string;
  /** CONTAINER_ALLOWLIST globs: only matching containers may be restarted. */
  containerAllowlist: string[];
  /** CONTAINER_DENYLIST globs: never restarted; wins over the allow list. */
  containerDenylist: string[];
  /** Milliseconds a restarted container has to answer 2xx on its health URL. Default 30000. */
  restartHealthTimeoutMs?: number;
  /** Milliseconds one webhook POST may take. Default 5000. */
  webhookTimeoutMs?: number;
  /** Attempts of the webhook POST (network errors, 429 and 5xx are retried). Default 4. */
  webhookAttempts?: number;
  /** Milliseconds before the second webhook attempt, doubled before each next one. Default 500. */
  webhookBackoffMs?: number;
  /** ESCALATION_WEBHOOK_FORMAT: `json` (default) or `slack`. */
  escalationWebhookFormat?: WebhookFormat;
  /** TEMPORAL_UI_URL: base of the Web UI, for a link to the run in escalations. */
  temporalUiUrl?: string;
}

export interface ActionDeps {
  /** selfheal's own tables (`healing_log`): SELFHEAL_DATABASE_URL. */
  pool: pg.Pool;
  /** The watched pipeline's database (`documents`): DATABASE_URL. Default `pool` (one database holds both). */
  pipelinePool?: pg.Pool;
  redis: Redis;
  keys: Keys;
  docker: Docker;
  config: ActionConfig;
  /** Escalations are logged here. Default: pino on stderr. */
  log?: pino.Logger;
}

/** Ids per Redis script call of a requeue: bounds how long one script holds Redis. */
const REQUEUE_SCRIPT_CHUNK = 5_000;
/** Locks per Redis script call of clearStaleLocks. */
const LOCK_SCRIPT_CHUNK = 1_000;
/** Seconds the done-markers of requeue chunks live: longer than any retry of the activity. */
const REQUEUE_MARKER_TTL_SECONDS = 7 * 86_400;
/** Serializes executions of one idempotency key (with the key's hash) across attempts and processes. */
const ADVISORY_NAMESPACE = 0x5e1f;

const STAGE_RE = /^[A-Za-z0-9_.-]+$/;
const WORKER_RE = /^[A-Za-z0-9_.-]+$/;

function invalid(message: string): never {
  throw ApplicationFailure.nonRetryable(message, ActionErrorType.invalid_input);
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** HTTP status of a GET, or 0 when nothing answered within the timeout. */
export async function httpStatus(url: string, timeoutMs = 2_000): Promise<number> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    await res.body?.cancel();
    return res.status;
  } catch {
    return 0;
  }
}

/** Workflow id, run id and activity id of the running activity: the executed row names the run that acted. */
function activityRun(): { workflowId: string; runId: string; activityId: string } {
  const info = Context.current().info;
  const run = info.workflowExecution;
  if (!run) invalid('actions run only as activities of a workflow');
  return { workflowId: run.workflowId, runId: run.runId, activityId: info.activityId };
}

function checkInput(input: ActionInput, action: ActionType): Plan {
  const plan = input?.plan;
  if (!plan || typeof plan !== 'object') invalid(`${action}: no plan`);
  if (plan.action !== action) invalid(`${action} called with a plan for ${String(plan.action)}`);
  if (typeof input.idempotencyKey !== 'string' || input.idempotencyKey.length === 0) {
    invalid(`${action}: an idempotency key is required`);
  }
  return plan;
}

function documentIdsOf(plan: Plan): number[] {
  const ids = plan.params.documentIds;
  if (!Array.isArray(ids) || ids.length === 0) invalid(`${plan.action}: params.documentIds must list documents`);
  for (const id of ids) {
    if (!Number.isSafeInteger(id) || id <= 0) invalid(`${plan.action}: bad document id ${JSON.stringify(id)}`);
  }
  return [...new Set(ids)];
}

type Queryable = Pick<pg.PoolClient, 'query'>;

interface RecordedRow {
  action: string | null;
  outcome: string | null;
  params: { result?: Record<string, unknown>; escalate?: boolean; redo?: unknown };
}

/** An action's recorded result, and what it recorded beside it for finishing its work after the commit. */
interface Recorded {
  result: ActionResult;
  redo?: unknown;
}

/** The Redis work of a committed requeue, per (stage, owner) group: recorded with the commit, replayed on retry. */
interface RequeueGroup {
  stage: string;
  owner: string | null;
  push: number[];
  drop: number[];
}

export function createActionActivities({ pool, pipelinePool, redis, keys, docker, config, log: logger }: ActionDeps) {
  const log = logger ?? pino({ name: 'selfheal-actions' }, pino.destination(2));
  /** Where `documents` lives; the same pool as `healing_log` unless SELFHEAL_DATABASE_URL names another database. */
  const documentsPool = pipelinePool ?? pool;
  const healthUrls = new Map(config.healthTargets.map((t) => [t.container, t.url]));
  const restartHealthTimeoutMs = config.restartHealthTimeoutMs ?? 30_000;

  // Scripts by SHA (EVALSHA with a transparent EVAL fallback, by ioredis); the number of keys is given per call.
  const scripts = redis as unknown as Record<string, (...args: (string | number)[]) => Promise<unknown>>;
  redis.defineCommand('selfhealRequeueChunk', { lua: REQUEUE_CHUNK });
  redis.defineCommand('selfhealClearStaleLocks', { lua: CLEAR_STALE_LOCKS });
  redis.defineCommand('selfhealRemoveEntries', { lua: REMOVE_ENTRIES });
  redis.defineCommand('selfhealRequeueLostChunk', { lua: REQUEUE_LOST_CHUNK });
  const runScript = (name: string, keyList: string[], args: (string | number)[]) =>
    scripts[name]!.call(redis, keyList.length, ...keyList, ...args);

  // ---- the executed row --------------------------------------------------------------------------------------

  async function recorded(db: Queryable, action: ActionType, key: string): Promise<Recorded | undefined> {
    const { rows } = await db.query<RecordedRow>(
      `SELECT action, outcome, params FROM healing_log WHERE step = 'executed' AND idempotency_key = $1`,
      [key],
    );
    const row = rows[0];
    if (!row) return undefined;
    if (row.action !== action) invalid(`idempotency key ${key} was used for ${String(row.action)}, not ${action}`);
    return {
      result: {
        action,
        outcome: (row.outcome ?? 'done') as ActionOutcome,
        details: { ...(row.params.result ?? {}), replayed: true },
        ...(row.params.escalate ? { escalate: true } : {}),
      },
      redo: row.params.redo,
    };
  }

  /**
   * Writes the executed row (with `redo`, the work left to do after the commit, when there is some). Returns false
   * when a row with the same idempotency key (or of the same activity of the same run) exists already.
   */
  async function record(db: Queryable, input: ActionInput, result: ActionResult, redo?: unknown): Promise<boolean> {
    const { plan } = input;
    const run = activityRun();
    const confidence = Number.isFinite(plan.confidence) ? Math.min(1, Math.max(0, plan.confidence)) : null;
    const { rowCount } = await db.query(
      `INSERT INTO healing_log (workflow_id, run_id, step, anomaly_type, target, action, params, decided_by,
                                confidence, outcome, error, idempotency_key, activity_id)
       VALUES ($1, $2, 'executed', $3, $4, $5, $6, $7, $8, $9, NULL, $10, $11)
       ON CONFLICT DO NOTHING`,
      [
        run.workflowId,
        run.runId,
        plan.anomalyType,
        plan.target,
        result.action,
        JSON.stringify({
          planId: plan.id,
          rung: plan.rung,
          request: plan.params,
          result: result.details,
          ...(result.escalate ? { escalate: true } : {}),
          ...(redo !== undefined ? { redo } : {}),
        }),
        input.decidedBy ?? plan.source,
        confidence,
        result.outcome,
        input.idempotencyKey,
        run.activityId,
      ],
    );
    return rowCount === 1;
  }

  /**
   * A Postgres action in one transaction with its executed row. The advisory lock on the key makes a concurrent
   * attempt with the same key wait, then find the row; the row is inserted before COMMIT, so the change and its
   * record are durable together or not at all. Returns the result (recorded or new) and its `redo`.
   *
   * With `documents` in another database than `healing_log`, there are two transactions: the one on `healing_log`
   * (advisory lock, look-up, the row) encloses the one on `documents`, which commits first. A crash between the two
   * COMMITs leaves the change without its row: the retry finds the rows changed already (no longer `processing`,
   * already `dead`), changes nothing and records that; what it cannot replay is the Redis half of a requeue, so those
   * documents are `queued` in no list, which `lost_documents` reports and repairs. Never the reverse (a row without
   * the change), and never a document changed twice.
   */
  async function inTransaction(
    input: ActionInput,
    action: ActionType,
    act: (db: pg.PoolClient) => Promise<Recorded>,
  ): Promise<Recorded> {
    if (documentsPool !== pool) return inTwoTransactions(input, action, act);
    const db = await pool.connect();
    let broken = false;
    try {
      await db.query('BEGIN');
      await db.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [ADVISORY_NAMESPACE, input.idempotencyKey]);
      const prior = await recorded(db, action, input.idempotencyKey);
      if (prior) {
        await db.query('ROLLBACK');
        return prior;
      }
      const done = await act(db);
      if (!(await record(db, input, done.result, done.redo))) {
        invalid(`${action}: activity ${activityRun().activityId} of this run already recorded another execution`);
      }
      await db.query('COMMIT');
      return done;
    } catch (err) {
      await db.query('ROLLBACK').catch(() => {
        broken = true;
      });
      throw err;
    } finally {
      db.release(broken);
    }
  }

  async function inTwoTransactions(
    input: ActionInput,
    action: ActionType,
    act: (db: pg.PoolClient) => Promise<Recorded>,
  ): Promise<Recorded> {
    const audit = await pool.connect();
    let auditBroken = false;
    try {
      await audit.query('BEGIN');
      await audit.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [ADVISORY_NAMESPACE, input.idempotencyKey]);
      const prior = await recorded(audit, action, input.idempotencyKey);
      if (prior) {
        await audit.query('ROLLBACK');
        return prior;
      }
      const db = await documentsPool.connect();
      let broken = false;
      try {
        await db.query('BEGIN');
        const done = await act(db);
        if (!(await record(audit, input, done.result, done.redo))) {
          invalid(`${action}: activity ${activityRun().activityId} of this run already recorded another execution`);
        }
        await db.query('COMMIT');
        await audit.query('COMMIT');
        return done;
      } catch (err) {
        await db.query('ROLLBACK').catch(() => {
          broken = true;
        });
        throw err;
      } finally {
        db.release(broken);
      }
    } catch (err) {
      await audit.query('ROLLBACK').catch(() => {
        auditBroken = true;
      });
      throw err;
    } finally {
      audit.release(auditBroken);
    }
  }

  /**
   * An `attempted` row: what a Docker action saw right before its call, so that a retry after a crash can tell
   * whether the call happened. One per attempt (activity id suffixed with the attempt number).
   */
  async function recordAttempt(input: ActionInput, seen: { container: string; startedAtBefore: string }) {
    const run = activityRun();
    const attempt = Context.current().info.attempt;
    await pool.query(
      `INSERT INTO healing_log (workflow_id, run_id, step, anomaly_type, target, action, params, decided_by,
                                idempotency_key, activity_id)
       VALUES ($1, $2, 'attempted', $3, $4, $5, $6, $7, $8, $9)
       ON CONFLICT DO NOTHING`,
      [
        run.workflowId,
        run.runId,
        input.plan.anomalyType,
        input.plan.target,
        input.plan.action,
        JSON.stringify({ planId: input.plan.id, attempt, ...seen }),
        input.decidedBy ?? input.plan.source,
        input.idempotencyKey,
        `${run.activityId}#attempt-${attempt}`,
      ],
    );
  }

  async function lastAttempt(
    key: string,
  ): Promise<{ container: string; startedAtBefore: string; attempt: number } | undefined> {
    const { rows } = await pool.query<{
      params: { container?: unknown; startedAtBefore?: unknown; attempt?: unknown };
    }>(`SELECT params FROM healing_log WHERE step = 'attempted' AND idempotency_key = $1 ORDER BY id DESC LIMIT 1`, [
      key,
    ]);
    const p = rows[0]?.params;
    if (!p || typeof p.container !== 'string' || typeof p.startedAtBefore !== 'string') return undefined;
    return { container: p.container, startedAtBefore: p.startedAtBefore, attempt: Number(p.attempt) };
  }

  /** For the Redis and Docker actions: the recorded result, read before acting. */
  const priorResult = async (action: ActionType, key: string) => (await recorded(pool, action, key))?.result;

  // ---- restart_worker ---------------------------------------------------------------------------------------

  async function isHealthy(url: string | undefined, running: boolean): Promise<{ healthy: boolean; status?: number }> {
    if (!running) return { healthy: false };
    if (!url) return { healthy: true };
    const status = await httpStatus(url);
    return { healthy: isHealthyStatus(status), status };
  }

  /**
   * Restarts a container through the Docker engine (inspect, then restart: no other Docker call), unless the
   * anomaly is about its health (unhealthy container, dead owner) and it is running and its health URL answers 2xx. Refused, without any Docker call, when the allow/deny lists forbid it.
   *
   * Before the restart call an `attempted` row records the container's StartedAt; the executed row is written
   * right after the call returns. A crash between the two (the worker killed mid-restart) leaves an attempt and no
   * executed row: the retry sees StartedAt changed since that attempt, so the container was restarted, and records
   * that restart as done (naming the attempt that did it) instead of restarting a second time.
   */
  async function restartWorker(input: ActionInput): Promise<ActionResult> {
    const plan = checkInput(input, 'restart_worker');
    const name = plan.params.container;
    if (typeof name !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(name)) {
      invalid(`restart_worker: params.container must be a container name, got ${JSON.stringify(name)}`);
    }
    // The policy checked this before; checked again here, where the restart happens (deny wins).
    const permitted = containerAllowed(name, config.containerAllowlist, config.containerDenylist);
    if (!permitted.ok) {
      return { action: 'restart_worker', outcome: 'refused', details: { container: name, reason: permitted.why } };
    }
    const prior = await priorResult('restart_worker', input.idempotencyKey);
    if (prior) return prior;

    const container = docker.getContainer(name);
    let inspected: Docker.ContainerInspectInfo;
    try {
      inspected = await container.inspect();
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) {
        throw ApplicationFailure.nonRetryable(`container ${name} does not exist`, ActionErrorType.container_not_found);
      }
      throw err;
    }
    const url = healthUrls.get(name);
    const attempted = await lastAttempt(input.idempotencyKey);
    if (attempted && attempted.container === name && attempted.startedAtBefore !== inspected.State.StartedAt) {
      const done: ActionResult = {
        action: 'restart_worker',
        outcome: 'done',
        details: {
          container: name,
          allowed: permitted.why,
          restartedByAttempt: attempted.attempt,
          startedAtBefore: attempted.startedAtBefore,
          startedAt: inspected.State.StartedAt,
          note: 'an earlier attempt restarted the container and stopped before recording it; not restarted again',
        },
      };
      await record(pool, input, done);
      return waitForHealth(name, url, done, performance.now());
    }
    const before = await isHealthy(url, inspected.State.Running);
    // Health is the problem only for an unhealthy container or a dead lock owner. A worker that fails, crawls or
    // hangs behind a 2xx is restarted while "healthy": the workflow re-ran its detector right before this call.
    if (before.healthy && HEALTH_VISIBLE_TYPES.includes(plan.anomalyType)) {
      const result: ActionResult = {
        action: 'restart_worker',
        outcome: 'nothing_to_do',
        details: {
          container: name,
          state: inspected.State.Status,
          ...(url ? { healthStatus: before.status } : { health: 'no health URL configured; running' }),
        },
      };
      await record(pool, input, result);
      return result;
    }

    await recordAttempt(input, { container: name, startedAtBefore: inspected.State.StartedAt });
    const t0 = performance.now();
    // The stop timeout may be long: keep heartbeating through the call.
    const beat = () => Context.current().heartbeat({ container: name, waiting: 'restart' });
    beat();
    const beating = setInterval(beat, 5_000);
    try {
      await container.restart({ t: config.restartStopTimeoutSeconds });
    } finally {
      clearInterval(beating);
    }
    const restartMs = Math.round(performance.now() - t0);
    const done: ActionResult = {
      action: 'restart_worker',
      outcome: 'done',
      details: {
        container: name,
        allowed: permitted.why,
        stateBefore: inspected.State.Status,
        healthStatusBefore: before.status ?? null,
        restartMs,
      },
    };
    await record(pool, input, done);
    return waitForHealth(name, url, done, t0);
  }

  /** Back to health after a restart, bounded. Without a health URL, running is all that can be known. */
  async function waitForHealth(
    name: string,
    url: string | undefined,
    done: ActionResult,
    t0: number,
  ): Promise<ActionResult> {
    const container = docker.getContainer(name);
    const deadline = Date.now() + restartHealthTimeoutMs;
    let last: { healthy: boolean; status?: number } = { healthy: false };
    for (;;) {
      Context.current().heartbeat({ container: name, waiting: 'health' });
      last = url ? await isHealthy(url, true) : await isHealthy(undefined, (await container.inspect()).State.Running);
      if (last.healthy || Date.now() > deadline) break;
      await sleep(200);
    }
    const healthyAfterMs = Math.round(performance.now() - t0);
    return {
      action: 'restart_worker',
      outcome: last.healthy ? 'done' : 'partial',
      details: {
        ...done.details,
        healthy: last.healthy,
        ...(last.healthy
          ? { healthyAfterMs }
          : { healthTimeoutMs: restartHealthTimeoutMs, lastHealthStatus: last.status ?? null }),
      },
    };
  }

  // ---- requeue_documents ------------------------------------------------------------------------------------

  /**
   * The Redis half of a committed requeue, exactly once per chunk whatever the retries: each chunk's script sets a
   * marker (named by the idempotency key and the chunk's index) in the same atomic step as its push, and skips
   * itself when the marker exists. Chunks are cut the same way on every replay.
   */
  async function applyRequeueInRedis(key: string, groups: RequeueGroup[]) {
    let leasesDeleted = 0;
    let processingEntriesRemoved = 0;
    let chunksApplied = 0;
    let chunksAlreadyApplied = 0;
    const calls: Promise<void>[] = [];
    let index = 0;
    for (const g of groups) {
      const all = [...g.push, ...g.drop].map(String);
      for (let i = 0; i < all.length; i += REQUEUE_SCRIPT_CHUNK) {
        const chunk = all.slice(i, i + REQUEUE_SCRIPT_CHUNK);
        const npush = Math.max(0, Math.min(g.push.length - i, chunk.length));
        const marker = `${keys.prefix}selfheal:requeue:${key}:${index++}`;
        // Issued together: ioredis pipelines them on one connection.
        calls.push(
          runScript(
            'selfhealRequeueChunk',
            [
              keys.queue(g.stage),
              keys.processing(g.stage, g.owner ?? '-'),
              marker,
              ...chunk.map((id) => keys.lock(id)),
            ],
            [g.owner === null ? '' : `${g.owner}:`, npush, REQUEUE_MARKER_TTL_SECONDS, ...chunk],
          ).then((r) => {
            const [leases, removed] = r as [number, number, number];
            if (leases < 0) {
              chunksAlreadyApplied++;
              return;
            }
            chunksApplied++;
            leasesDeleted += leases;
            processingEntriesRemoved += removed;
          }),
        );
      }
    }
    const settled = await Promise.allSettled(calls);
    const failed = settled.find((x): x is PromiseRejectedResult => x.status === 'rejected');
    // Transient: the rows are committed, the retry replays the chunks not yet applied.
    if (failed) throw failed.reason;
    return { leasesDeleted, processingEntriesRemoved, chunksApplied, chunksAlreadyApplied };
  }

  /**
   * Requeues documents that are still stuck, exactly once each, dead-lettering those requeued MAX_REQUEUES times.
   *
   * 1. One Postgres transaction: `SELECT ... FOR UPDATE SKIP LOCKED` of the rows still `processing` (in the plan's
   *    stage), so a row that completed or moved meanwhile, or that a worker is committing right now, is left alone;
   *    one UPDATE (`queued`, requeue_count + 1, worker_id NULL; or `dead` with the reason); the executed row, which
   *    also records the Redis work per (stage, owner); COMMIT.
   * 2. Redis, per chunk of a group, one atomic script: the owner's leases deleted, the ids removed from the owner's
   *    processing list, the requeued ids pushed to `queue:<stage>`, and the chunk's done-marker set.
   *
   * Why Postgres first: a worker that pops an id checks that its row is `queued` in that stage, and its UPDATE does
   * not wait for our uncommitted change (the committed row it sees is still `processing`, so it matches nothing and
   * the entry is dropped). Pushing before COMMIT would therefore lose documents. After COMMIT the rows are `queued`
   * but in no list until step 2 runs: a crash or a Redis error there fails the activity, and its retry finds the
   * executed row, replays the recorded Redis work, and skips the chunks whose marker exists, so every id is pushed
   * exactly once. If no retry ever succeeds, the rows are `queued` in no list, which `lost_documents` reports.
   */
  async function requeueDocuments(input: ActionInput): Promise<ActionResult> {
    const plan = checkInput(input, 'requeue_documents');
    if (plan.anomalyType === 'lost_documents') return requeueLost(input, plan);
    const requested = documentIdsOf(plan);
    const stage = plan.params.stage;
    if (stage !== undefined && (typeof stage !== 'string' || !STAGE_RE.test(stage))) {
      invalid(`requeue_documents: bad stage ${JSON.stringify(stage)}`);
    }
    const ids = requested.slice(0, config.requeueCap);
    const deferred = requested.length - ids.length;
    const reason = plan.params.reason?.slice(0, 500) ?? `stuck in processing (${plan.anomalyType} on ${plan.target})`;
    const deadError = `dead-lettered by selfheal after ${config.maxRequeues} requeues: ${reason}`;

    const { result, redo } = await inTransaction(input, 'requeue_documents', async (db) => {
      const { rows } = await db.query<{ id: number; stage: string; owner: string | null; status: string }>(
        `WITH stuck AS (
           SELECT id, worker_id, requeue_count FROM documents
            WHERE id = ANY($1::bigint[]) AND status = 'processing' AND ($2::text IS NULL OR stage = $2)
            ORDER BY id
            FOR UPDATE SKIP LOCKED)
         UPDATE documents d
            SET status        = CASE WHEN s.requeue_count + 1 > $3 THEN 'dead' ELSE 'queued' END,
                requeue_count = CASE WHEN s.requeue_count + 1 > $3 THEN d.requeue_count ELSE d.requeue_count + 1 END,
                worker_id     = CASE WHEN s.requeue_count + 1 > $3 THEN d.worker_id ELSE NULL END,
                error         = CASE WHEN s.requeue_count + 1 > $3 THEN $4 ELSE d.error END,
                updated_at    = now()
           FROM stuck s
          WHERE d.id = s.id
         RETURNING d.id, d.stage, s.worker_id AS owner, d.status`,
        [ids, stage ?? null, config.maxRequeues, deadError],
      );
      rows.sort((a, b) => a.id - b.id);
      const groups = new Map<string, RequeueGroup>();
      for (const r of rows) {
        const owner = r.owner !== null && WORKER_RE.test(r.owner) ? r.owner : null;
        const k = `${r.stage}\u0000${owner ?? ''}`;
        let g = groups.get(k);
        if (!g) groups.set(k, (g = { stage: r.stage, owner, push: [], drop: [] }));
        (r.status === 'queued' ? g.push : g.drop).push(r.id);
      }
      const requeued = rows.filter((r) => r.status === 'queued').map((r) => r.id);
      const quarantined = rows.filter((r) => r.status === 'dead').map((r) => r.id);
      const acted = requeued.length + quarantined.length;
      const details: Record<string, unknown> = {
        stage: stage ?? null,
        requested: requested.length,
        requeued,
        quarantined,
        // Completed, moved on, requeued already, or being committed by a worker right now.
        notStuck: ids.length - acted,
        deferred,
        owners: [...new Set(rows.map((r) => r.owner).filter((o): o is string => o !== null))].sort(),
        maxRequeues: config.maxRequeues,
      };
      return {
        result: {
          action: 'requeue_documents',
          outcome: acted === 0 && deferred === 0 ? 'nothing_to_do' : deferred > 0 ? 'partial' : 'done',
          details,
          ...(quarantined.length > 0 ? { escalate: true } : {}),
        },
        redo: [...groups.values()],
      };
    });
    const groups = Array.isArray(redo) ? (redo as RequeueGroup[]) : [];
    const applied = await applyRequeueInRedis(input.idempotencyKey, groups);
    return { ...result, details: { ...result.details, redis: applied } };
  }

  /**
   * Lost documents (queued in Postgres, in no list) back on their queue, exactly once each.
   *
   * 1. One transaction: the rows still `queued` in the plan's stage and not touched since the plan's evidence
   *    (`updated_at` older than LOST_DOCUMENT_THRESHOLD), `FOR UPDATE SKIP LOCKED`; requeue_count + 1 (or `dead`
   *    past MAX_REQUEUES), updated_at now; the executed row with the ids to push; COMMIT.
   * 2. Redis, per chunk, one atomic script: every list of the pipeline is checked and only the ids in none of them
   *    are pushed (never one that is already in a list), with the chunk's done-marker.
   */
  async function requeueLost(input: ActionInput, plan: Plan): Promise<ActionResult> {
    const requested = documentIdsOf(plan);
    const stage = plan.params.stage;
    if (typeof stage !== 'string' || !STAGE_RE.test(stage)) {
      invalid(`requeue_documents: lost documents need their stage, got ${JSON.stringify(stage)}`);
    }
    const ids = requested.slice(0, config.requeueCap);
    const deferred = requested.length - ids.length;
    const deadError = `dead-lettered by selfheal after ${config.maxRequeues} requeues: lost from its queue again`;
    const { result, redo } = await inTransaction(input, 'requeue_documents', async (db) => {
      const { rows } = await db.query<{ id: number; status: string }>(
        `WITH lost AS (
           SELECT id, requeue_count FROM documents
            WHERE id = ANY($1::bigint[]) AND status = 'queued' AND stage = $2
              AND updated_at < now() - make_interval(secs => $5)
            ORDER BY id
            FOR UPDATE SKIP LOCKED)
         UPDATE documents d
            SET status        = CASE WHEN l.requeue_count + 1 > $3 THEN 'dead' ELSE 'queued' END,
                requeue_count = CASE WHEN l.requeue_count + 1 > $3 THEN d.requeue_count ELSE d.requeue_count + 1 END,
                error         = CASE WHEN l.requeue_count + 1 > $3 THEN $4 ELSE d.error END,
                updated_at    = now()
           FROM lost l
          WHERE d.id = l.id
         RETURNING d.id, d.status`,
        [ids, stage, config.maxRequeues, deadError, config.lostDocumentSeconds ?? 600],
      );
      const push = rows
        .filter((r) => r.status === 'queued')
        .map((r) => r.id)
        .sort((a, b) => a - b);
      const quarantined = rows
        .filter((r) => r.status === 'dead')
        .map((r) => r.id)
        .sort((a, b) => a - b);
      const acted = push.length + quarantined.length;
      return {
        result: {
          action: 'requeue_documents',
          outcome: acted === 0 && deferred === 0 ? 'nothing_to_do' : deferred > 0 ? 'partial' : 'done',
          details: {
            stage,
            lost: true,
            requested: requested.length,
            requeued: push,
            quarantined,
            notLost: ids.length - acted,
            deferred,
            maxRequeues: config.maxRequeues,
          },
          ...(quarantined.length > 0 ? { escalate: true } : {}),
        },
        redo: { stage, push },
      };
    });
    const work = redo as { stage: string; push: number[] } | undefined;
    if (!work || work.push.length === 0) return result;
    const queues = (config.stages ?? STAGES).filter((s) => s !== work.stage).map((s) => keys.queue(s));
    let pushed = 0;
    let alreadyInAList = 0;
    let chunksAlreadyApplied = 0;
    for (let i = 0, index = 0; i < work.push.length; i += REQUEUE_SCRIPT_CHUNK, index++) {
      const chunk = work.push.slice(i, i + REQUEUE_SCRIPT_CHUNK).map(String);
      const marker = `${keys.prefix}selfheal:requeue-lost:${input.idempotencyKey}:${index}`;
      const [n, present] = (await runScript(
        'selfhealRequeueLostChunk',
        [keys.queue(work.stage), marker, ...queues],
        [REQUEUE_MARKER_TTL_SECONDS, keys.processingPattern(), ...chunk],
      )) as [number, number];
      if (n < 0) chunksAlreadyApplied++;
      else {
        pushed += n;
        alreadyInAList += present;
      }
    }
    return { ...result, details: { ...result.details, redis: { pushed, alreadyInAList, chunksAlreadyApplied } } };
  }

  // ---- clear_stale_locks ------------------------------------------------------------------------------------

  /**
   * Deletes each observed lease only if its owner has no heartbeat and it still holds exactly the observed value
   * (one script per batch: check and delete are atomic). A lease re-acquired meanwhile, or whose owner came back,
   * survives. Written after the script returns; a retry in the window re-runs compare-and-deletes that no longer
   * match anything, so it changes nothing.
   */
  async function clearStaleLocks(input: ActionInput): Promise<ActionResult> {
    const plan = checkInput(input, 'clear_stale_locks');
    const locks = plan.params.locks;
    if (!Array.isArray(locks) || locks.length === 0) invalid('clear_stale_locks: params.locks must list locks');
    for (const l of locks) {
      if (
        typeof l?.documentId !== 'string' ||
        !/^[A-Za-z0-9_.-]+$/.test(l.documentId) ||
        typeof l.owner !== 'string' ||
        !WORKER_RE.test(l.owner) ||
        typeof l.token !== 'string' ||
        l.token.length === 0
      ) {
        invalid(`clear_stale_locks: malformed lock ${JSON.stringify(l)}`);
      }
    }
    const prior = await priorResult('clear_stale_locks', input.idempotencyKey);
    if (prior) return prior;

    const codes: number[] = [];
    const calls: Promise<unknown>[] = [];
    for (let i = 0; i < locks.length; i += LOCK_SCRIPT_CHUNK) {
      const chunk = locks.slice(i, i + LOCK_SCRIPT_CHUNK);
      calls.push(
        runScript(
          'selfhealClearStaleLocks',
          chunk.flatMap((l) => [keys.lock(l.documentId), keys.heartbeat(l.owner)]),
          chunk.map((l) => `${l.owner}:${l.token}`),
        ).then((r) => (r as number[]).forEach((code, j) => (codes[i + j] = code))),
      );
    }
    await Promise.all(calls);
    const pick = (code: number) => locks.filter((_, i) => codes[i] === code).map((l) => l.documentId);
    const cleared = pick(1);
    const result: ActionResult = {
      action: 'clear_stale_locks',
      outcome: cleared.length > 0 ? 'done' : 'nothing_to_do',
      details: { observed: locks.length, cleared, ownerAlive: pick(-1), changedOrGone: pick(0) },
    };
    await record(pool, input, result);
    return result;
  }

  // ---- escalate_to_human ------------------------------------------------------------------------------------

  const notifier = createEscalationNotifier({
    url: config.escalationWebhookUrl,
    format: config.escalationWebhookFormat,
    attempts: config.webhookAttempts,
    timeoutMs: config.webhookTimeoutMs,
    backoffMs: config.webhookBackoffMs,
  });

  /**
   * Tells a human: one log line, and the webhook when configured (with the commands that approve or reject).
   * `done` without a webhook; `partial` when the webhook could not be delivered. Written after the POST; a retry in
   * the window posts again (a duplicate message, never a lost one).
   */
  async function escalateToHuman(input: ActionInput): Promise<ActionResult> {
    const plan = checkInput(input, 'escalate_to_human');
    const prior = await priorResult('escalate_to_human', input.idempotencyKey);
    if (prior) return prior;
    const result: ActionResult = { action: 'escalate_to_human', ...(await tellHuman(plan, false)) };
    await record(pool, input, result);
    return result;
  }

  /**
   * Tells a human that a healing waits for a decision on `plan` (any action): a log line and the webhook, with the
   * commands that approve or reject exactly that plan. Not an action (changes nothing, writes no executed row); the
   * workflow audits the delivery. A retry after a delivered webhook may deliver it twice: receivers see the same
   * plan id.
   */
  async function requestApproval(input: ActionInput): Promise<ActionResult> {
    const plan = input?.plan;
    if (!plan || typeof plan !== 'object' || typeof plan.id !== 'string') invalid('requestApproval: no plan');
    return { action: plan.action, ...(await tellHuman(plan, true)) };
  }

  /** The log line and the webhook (retried inside, see activities/notify.ts), and what became of them. */
  async function tellHuman(plan: Plan, awaitingApproval: boolean): Promise<Omit<ActionResult, 'action'>> {
    const { workflowId, runId } = activityRun();
    const anomaly = await loadDetectedAnomaly(pool, workflowId, runId);
    const commands = escalationCommands(workflowId, awaitingApproval ? plan.id : undefined);
    log.warn(
      {
        workflowId,
        runId,
        anomalyType: plan.anomalyType,
        target: plan.target,
        planId: plan.id,
        reason: plan.params.reason ?? plan.reasoning,
        commands,
      },
      awaitingApproval ? `approval needed: ${plan.action}` : 'escalation: human attention needed',
    );
    const delivery = await notifier.notify({
      workflowId,
      runId,
      namespace: Context.current().info.namespace,
      plan,
      anomaly,
      webUiUrl: config.temporalUiUrl,
      at: Date.now(),
      awaitingApproval,
    });
    return {
      outcome: delivery.webhook === 'failed' ? 'partial' : 'done',
      details: { logged: true, ...delivery, commands },
    };
  }

  // ---- quarantine_document ----------------------------------------------------------------------------------

  /** Dead-letters the documents (status `dead`, error = the reason) unless completed or dead already. */
  async function quarantineDocument(input: ActionInput): Promise<ActionResult> {
    const plan = checkInput(input, 'quarantine_document');
    const requested = documentIdsOf(plan);
    const ids = requested.slice(0, config.requeueCap);
    const deferred = requested.length - ids.length;
    const reason = `quarantined by selfheal: ${plan.params.reason?.slice(0, 500) ?? `${plan.anomalyType} on ${plan.target}`}`;
    const { result } = await inTransaction(input, 'quarantine_document', async (db) => {
      const { rows } = await db.query<{ id: number }>(
        `UPDATE documents SET status = 'dead', error = $2, updated_at = now()
          WHERE id = ANY($1::bigint[]) AND status NOT IN ('completed', 'dead')
         RETURNING id`,
        [ids, reason],
      );
      const quarantined = rows.map((r) => r.id).sort((a, b) => a - b);
      return {
        result: {
          action: 'quarantine_document',
          outcome: quarantined.length === 0 && deferred === 0 ? 'nothing_to_do' : deferred > 0 ? 'partial' : 'done',
          details: { requested: requested.length, quarantined, skipped: ids.length - quarantined.length, deferred },
        },
      };
    });
    return result;
  }

  // ---- remove_orphaned_entries ------------------------------------------------------------------------------

  /** `queue` of an entry: a stage name, or `queue:<stage>` with or without the key prefix. */
  function queueKeyOf(queue: unknown): string {
    if (typeof queue !== 'string') invalid(`remove_orphaned_entries: bad queue ${JSON.stringify(queue)}`);
    let stage = queue;
    if (keys.prefix && stage.startsWith(keys.prefix)) stage = stage.slice(keys.prefix.length);
    if (stage.startsWith('queue:')) stage = stage.slice('queue:'.length);
    if (!STAGE_RE.test(stage)) invalid(`remove_orphaned_entries: bad queue ${JSON.stringify(queue)}`);
    return keys.queue(stage);
  }

  /**
   * Removes exactly the observed queue entries, after re-reading Postgres: entries of a completed, dead or missing
   * document go (up to the observed count); of a document still queued in that stage only the extra copies go
   * (one stays). Anything else is left. Written after the removals; a retry in the window removes nothing more than
   * the observed counts that are still present.
   */
  async function removeOrphanedEntries(input: ActionInput): Promise<ActionResult> {
    const plan = checkInput(input, 'remove_orphaned_entries');
    const entries = plan.params.entries;
    if (!Array.isArray(entries) || entries.length === 0) {
      invalid('remove_orphaned_entries: params.entries must list entries');
    }
    const parsed = entries.map((e) => {
      if (typeof e?.id !== 'string' || e.id.length === 0 || e.id.length > 64) {
        invalid(`remove_orphaned_entries: malformed entry ${JSON.stringify(e)}`);
      }
      const count = Number.isSafeInteger(e.count) && e.count > 0 ? e.count : 1;
      const key = queueKeyOf(e.queue);
      return { key, stage: key.slice(keys.queue('').length), id: e.id, count };
    });
    const prior = await priorResult('remove_orphaned_entries', input.idempotencyKey);
    if (prior) return prior;

    const numeric = parsed.map((e) => e.id).filter((id) => /^\d{1,15}$/.test(id));
    const { rows } = await documentsPool.query<{ id: number; stage: string; status: string }>(
      'SELECT id, stage, status FROM documents WHERE id = ANY($1::bigint[])',
      [numeric.map(Number)],
    );
    const byId = new Map(rows.map((r) => [String(r.id), r]));
    const removed: { queue: string; id: string; removed: number; why: string }[] = [];
    const kept: { queue: string; id: string; why: string }[] = [];
    for (const e of parsed) {
      const doc = byId.get(e.id);
      let why: string;
      let keepOne = false;
      if (!doc) why = 'missing';
      else if (doc.status === 'completed' || doc.status === 'dead') why = doc.status;
      else if (doc.status === 'queued' && doc.stage === e.stage && e.count > 1) {
        why = 'duplicate';
        keepOne = true;
      } else {
        kept.push({ queue: e.key, id: e.id, why: `${doc.status} in ${doc.stage}` });
        continue;
      }
      const n = Number(await runScript('selfhealRemoveEntries', [e.key], [e.id, e.count, keepOne ? '1' : '0']));
      if (n > 0) removed.push({ queue: e.key, id: e.id, removed: n, why });
      else kept.push({ queue: e.key, id: e.id, why: `${why}, but no longer in the queue` });
    }
    const result: ActionResult = {
      action: 'remove_orphaned_entries',
      outcome: removed.length > 0 ? 'done' : 'nothing_to_do',
      details: { observed: parsed.length, removed, kept },
    };
    await record(pool, input, result);
    return result;
  }

  return {
    restartWorker,
    requeueDocuments,
    clearStaleLocks,
    escalateToHuman,
    requestApproval,
    quarantineDocument,
    removeOrphanedEntries,
  };
}
