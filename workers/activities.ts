/**
 * The activities each worker hosts, wired from the configuration and the clients. The worker entry points and the
 * test harness (tests/helpers/workers.ts) both use these, so tests run exactly the production wiring.
 */
import type Docker from 'dockerode';
import type { Redis } from 'ioredis';
import type pg from 'pg';
import { createActionActivities } from '../activities/actions';
import { createAnalysisActivities, createOllamaClient } from '../activities/analysis';
import { createApprovalActivities } from '../activities/approval';
import { createAuditActivities } from '../activities/audit';
import { createDetectionActivities } from '../activities/detection';
import { createDockerActivities } from '../activities/docker';
import { StopRecords } from '../activities/docker-stops';
import { createEvidenceActivities } from '../activities/evidence';
import { createMetricsActivities } from '../activities/metrics';
import { createRunbookSource } from '../activities/runbook-source';
import { createGateActivities } from '../activities/gate';
import { createPolicyActivities, createSafetyActivities } from '../activities/safety';
import { createSilenceActivities } from '../activities/silences';
import type { Config } from '../core/config';
import { createKeys } from '../core/keys';
import { healingPolicy } from './schedule';

/** Records read back per cycle: enough to cover the longest look-back of the detectors at the configured interval. */
export function historyLimit(config: Config): number {
  const lookBackSeconds =
    Math.max(config.QUEUE_STALL_THRESHOLD, config.ERROR_RATE_WINDOW * 3) + config.MONITOR_INTERVAL * 10;
  return Math.min(2_000, Math.ceil(lookBackSeconds / config.MONITOR_INTERVAL) + 10);
}

/** The clients of a worker. */
export interface WorkerClients {
  /** selfheal's own tables (`healing_log`, `action_permits`): SELFHEAL_DATABASE_URL. */
  pool: pg.Pool;
  /** The watched pipeline's database (`documents`): DATABASE_URL. Default `pool` (one database holds both). */
  pipelinePool?: pg.Pool;
  redis: Redis;
}

/** selfheal-monitor: metrics collection, detection (and verification's re-check), audit. */
export function monitorActivities(config: Config, { pool, pipelinePool, redis }: WorkerClients) {
  const keys = createKeys(config.REDIS_KEY_PREFIX);
  return {
    ...createAuditActivities({ pool }),
    ...createMetricsActivities({
      redis,
      pool: pipelinePool ?? pool,
      keys,
      stages: config.PIPELINE_STAGES,
      healthTargets: config.HEALTH_TARGETS,
      ollamaHost: config.OLLAMA_HOST,
      ollamaModel: config.OLLAMA_MODEL,
      windowSeconds: config.ERROR_RATE_WINDOW,
      lostDocumentSeconds: config.LOST_DOCUMENT_THRESHOLD,
      // Without document_events, a stage's last outcome is looked for this far back (twice the stall threshold).
      progressLookbackSeconds: config.QUEUE_STALL_THRESHOLD * 2,
    }),
    ...createDetectionActivities({
      redis,
      keys,
      retentionSeconds: config.METRICS_RETENTION,
      historyLimit: historyLimit(config),
      intervalSeconds: config.MONITOR_INTERVAL,
    }),
  };
}

/** selfheal-healing: LLM analysis with the runbook fallback, the safety state, audit. */
export function healingActivities(config: Config, { pool, redis }: WorkerClients) {
  // One reader of RUNBOOKS_FILE for the worker; an edit that breaks it keeps the last valid version in force.
  const runbooks = createRunbookSource(config.RUNBOOKS_FILE, (error) =>
    process.stderr.write(`selfheal: RUNBOOKS_FILE is invalid, the last valid version stays in force:\n${error}\n`),
  );
  const safety = createSafetyActivities({ pool, redis, keys: createKeys(config.REDIS_KEY_PREFIX), runbooks });
  const silences = createSilenceActivities({ pool });
  return {
    ...createAuditActivities({ pool }),
    ...createApprovalActivities({ secret: config.APPROVAL_SECRET }),
    ...safety,
    // This worker's configuration is the healing policy in force (a healing's input holds the one it started with).
    ...createPolicyActivities(() => healingPolicy(config)),
    ...silences,
    ...createGateActivities({ safety, silences }),
    ...createAnalysisActivities({
      runbooks,
      ollama: createOllamaClient({ host: config.OLLAMA_HOST, timeoutMs: config.LLM_TIMEOUT_MS }),
      model: config.OLLAMA_MODEL,
      timeoutMs: config.LLM_TIMEOUT_MS,
      containers: config.HEALTH_TARGETS.map((t) => t.container),
    }),
  };
}

/** selfheal-actions: the remediation actions and the Docker inspection; the only worker with a Docker client. */
export function actionsActivities(
  config: Config,
  {
    pool,
    pipelinePool,
    redis,
    docker,
    stopRecords,
  }: WorkerClients & {
    docker: Docker;
    /** The stops on purpose as this process's Docker event watcher records them (workers/actions.ts). */
    stopRecords?: StopRecords;
  },
) {
  const keys = createKeys(config.REDIS_KEY_PREFIX);
  // One record of the stops on purpose for the inspection and the restart action: the watcher's, when it runs here.
  const stops = stopRecords ?? new StopRecords(redis, keys);
  return {
    ...createAuditActivities({ pool }),
    ...createDockerActivities({
      docker,
      scope: { allowlist: config.CONTAINER_ALLOWLIST, autohealLabel: config.AUTOHEAL_LABEL },
      stops: { redis, keys, records: stops },
    }),
    ...createEvidenceActivities({ docker, pool: pipelinePool ?? pool }),
    ...createActionActivities({
      pool,
      pipelinePool,
      redis,
      keys,
      docker,
      stopRecords: stops,
      config: {
        maxRequeues: config.MAX_REQUEUES,
        requeueCap: config.REQUEUE_CAP,
        restartStopTimeoutSeconds: config.RESTART_STOP_TIMEOUT,
        lostDocumentSeconds: config.LOST_DOCUMENT_THRESHOLD,
        stages: config.PIPELINE_STAGES,
        healthTargets: config.HEALTH_TARGETS,
        escalationWebhookUrl: config.ESCALATION_WEBHOOK_URL,
        escalationWebhookFormat: config.ESCALATION_WEBHOOK_FORMAT,
        temporalUiUrl: config.TEMPORAL_UI_URL,
        publicUrl: config.PUBLIC_URL,
        containerAllowlist: config.CONTAINER_ALLOWLIST,
        containerDenylist: config.CONTAINER_DENYLIST,
        autohealLabel: config.AUTOHEAL_LABEL,
      },
    }),
  };
}
