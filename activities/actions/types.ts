import type Docker from 'dockerode';
import type { Redis } from 'ioredis';
import type pg from 'pg';
import type pino from 'pino';
import type { HealthTarget } from '../../core/config';
import type { Keys } from '../../core/keys';
import type { Plan } from '../../core/plan';
import type { ActionType } from '../../core/types';
import type { WebhookFormat } from '../notify';
import type { StopRecords } from '../docker-stops';

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
  /** AUTOHEAL_LABEL: `autoheal=true` puts a container in scope like `selfheal.enable=true`. Default true. */
  autohealLabel?: boolean;
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
  /** PUBLIC_URL: selfheal's HTTP server as people reach it, for the healing's link and decision endpoints. */
  publicUrl?: string;
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
  /** The stops on purpose as the process's Docker event watcher records them; default Redis's alone. */
  stopRecords?: StopRecords;
}
