import { Writable } from 'node:stream';
import { LogTimestamp } from '@temporalio/worker';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { createTemporalLogger, sdkLogFields } from '../../workers/logger';

/** A pino logger writing into an array of parsed lines. */
function memoryPino(level = 'trace') {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n').filter(Boolean))
        lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { log: pino({ level, base: { service: 'test' } }, stream), lines };
}

const ACTIVITY_META = {
  sdkComponent: 'activity',
  isLocal: false,
  attempt: 2,
  namespace: 'default',
  taskToken: 'Cg1zZWNyZXQtdG9rZW4=',
  activityId: '3',
  activityType: 'collectMetrics',
  taskQueue: 'selfheal-monitor',
  workflowId: 'monitoring-cycle-1',
  workflowRunId: 'run-a',
  workflowType: 'monitoringCycleWorkflow',
};

describe('the Temporal Runtime logger on pino', () => {
  it.each([
    {
      name: 'an activity record: runId from workflowRunId, taskToken dropped, the rest kept',
      meta: ACTIVITY_META,
      expected: { ...ACTIVITY_META, taskToken: undefined, runId: 'run-a' },
    },
    {
      name: 'a workflow record: kept as is',
      meta: {
        sdkComponent: 'workflow',
        workflowId: 'heal-x',
        runId: 'run-b',
        workflowType: 'healingWorkflow',
        rung: 1,
      },
      expected: {
        sdkComponent: 'workflow',
        workflowId: 'heal-x',
        runId: 'run-b',
        workflowType: 'healingWorkflow',
        rung: 1,
      },
    },
    {
      name: 'a Core record: snake_case ids get their camelCase names',
      meta: { sdkComponent: 'core', target: 'temporal_sdk_core', workflow_id: 'heal-y', run_id: 'run-c' },
      expected: { sdkComponent: 'core', workflowId: 'heal-y', runId: 'run-c', workflow_id: 'heal-y', run_id: 'run-c' },
    },
    {
      name: 'the SDK timestamp becomes sdkTime in ms',
      meta: { [LogTimestamp]: 1_750_000_000_123_456_789n, workflowId: 'w', runId: 'r' },
      expected: { sdkTime: 1_750_000_000_123, workflowId: 'w', runId: 'r' },
    },
    { name: 'no metadata', meta: undefined, expected: {} },
  ])('$name', ({ meta, expected }) => {
    const fields = sdkLogFields(meta);
    for (const [k, v] of Object.entries(expected)) {
      if (v === undefined) expect(fields).not.toHaveProperty(k);
      else expect(fields[k]).toEqual(v);
    }
  });

  it('writes one JSON line per record at the mapped level, with the metadata and an Error under err', () => {
    const { log, lines } = memoryPino();
    const logger = createTemporalLogger(log);
    logger.info('Activity completed', { ...ACTIVITY_META, durationMs: 12 });
    logger.log('WARN', 'Workflow failed', {
      sdkComponent: 'worker',
      workflowId: 'heal-x',
      runId: 'run-b',
      error: new Error('boom'),
    });
    logger.debug('debug line', { workflowId: 'w', runId: 'r' });
    logger.trace('trace line');
    logger.error('error line', { workflowId: 'w', runId: 'r' });
    expect(lines.map((l) => [l.level, l.msg])).toEqual([
      [30, 'Activity completed'],
      [40, 'Workflow failed'],
      [20, 'debug line'],
      [10, 'trace line'],
      [50, 'error line'],
    ]);
    expect(lines[0]).toMatchObject({
      service: 'test',
      workflowId: 'monitoring-cycle-1',
      runId: 'run-a',
      activityType: 'collectMetrics',
      durationMs: 12,
    });
    expect(lines[0]).not.toHaveProperty('taskToken');
    expect(lines[1]).toMatchObject({ workflowId: 'heal-x', runId: 'run-b', err: { message: 'boom', type: 'Error' } });
  });

  it("respects pino's level", () => {
    const { log, lines } = memoryPino('warn');
    const logger = createTemporalLogger(log);
    logger.info('dropped', { workflowId: 'w', runId: 'r' });
    logger.warn('kept', { workflowId: 'w', runId: 'r' });
    expect(lines.map((l) => l.msg)).toEqual(['kept']);
  });
});
