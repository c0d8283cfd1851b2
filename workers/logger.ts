import type { Logger as TemporalLogger, LogLevel, LogMetadata } from '@temporalio/common';
import pino from 'pino';

/** JSON logs on stderr (stdout stays free for command output). */
export function createLogger(name: string, level = process.env.LOG_LEVEL ?? 'info'): pino.Logger {
  return pino({ name, level, base: { pid: process.pid, service: name } }, pino.destination(2));
}
export type Logger = pino.Logger;

/** Where the SDK puts the time a record was made (nanoseconds, bigint); the same `Symbol.for` as the SDK's. */
const LOG_TIMESTAMP = Symbol.for('log_timestamp');

const PINO_METHOD = { TRACE: 'trace', DEBUG: 'debug', INFO: 'info', WARN: 'warn', ERROR: 'error' } as const;

/**
 * The fields of one SDK log record, for pino. Everything the SDK attached is kept (workflowId, runId, workflowType,
 * activityId, activityType, taskQueue, namespace, attempt, sdkComponent, core's `target` and fields...), with:
 * - `runId` added where the SDK names it otherwise: activity records carry `workflowRunId`, Core's records `run_id`
 *   (and `workflow_id`), so a query on `runId` finds a run's workflow and activity lines alike;
 * - `sdkTime` (epoch ms): when the record was made; log forwarding buffers records for up to 100 ms to order them,
 *   so pino's `time` is when it was written;
 * - an Error under `error` or `failure` moved to `err`, where pino's serializer keeps its message and stack;
 * - the activity's `taskToken` dropped: anyone holding it can complete or fail the activity.
 */
export function sdkLogFields(meta: LogMetadata | undefined): Record<string, unknown> {
  if (!meta) return {};
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(meta)) {
    if (key === 'taskToken') continue;
    if ((key === 'error' || key === 'failure') && value instanceof Error && !('err' in meta)) out.err = value;
    else out[key] = value;
  }
  const nanos: unknown = meta[LOG_TIMESTAMP];
  if (typeof nanos === 'bigint') out.sdkTime = Number(nanos / 1_000_000n);
  if (out.workflowId === undefined && typeof out.workflow_id === 'string') out.workflowId = out.workflow_id;
  if (out.runId === undefined) {
    const runId = out.workflowRunId ?? out.run_id;
    if (typeof runId === 'string') out.runId = runId;
  }
  return out;
}

/**
 * The Temporal Runtime's logger (`Runtime.install({ logger })`) on top of pino: the SDK's own records, Core's
 * (forwarded), and those of workflow code (`log` from @temporalio/workflow) and activity code (`log` from
 * @temporalio/activity, `Context.current().log`) become pino JSON lines with their metadata.
 */
export function createTemporalLogger(log: pino.Logger): TemporalLogger & { flush(): void } {
  const emit = (level: LogLevel, message: string, meta?: LogMetadata) => {
    log[PINO_METHOD[level] ?? 'info'](sdkLogFields(meta), message);
  };
  return {
    log: emit,
    trace: (message, meta) => emit('TRACE', message, meta),
    debug: (message, meta) => emit('DEBUG', message, meta),
    info: (message, meta) => emit('INFO', message, meta),
    warn: (message, meta) => emit('WARN', message, meta),
    error: (message, meta) => emit('ERROR', message, meta),
    flush: () => log.flush(),
  };
}
