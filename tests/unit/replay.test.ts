/**
 * Determinism: every workflow history recorded under tests/fixtures/histories (real runs against a Temporal server,
 * see RECORD_HISTORIES in tests/integration/monitoring.test.ts) replays with the current workflow code. A change
 * that would break running workflows fails here.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { historyFromJSON } from '@temporalio/common/lib/proto-utils';
import { bundleWorkflowCode, DefaultLogger, Worker, type WorkflowBundle } from '@temporalio/worker';
import { beforeAll, describe, expect, it } from 'vitest';
import { SPEND_GONE_MARKS_PATCH } from '../../workflows/monitoring';

const dir = path.join(__dirname, '../fixtures/histories');
const files = readdirSync(dir).filter((f) => f.endsWith('.json'));

describe('recorded workflow histories replay with the current code', () => {
  let bundle: WorkflowBundle;
  beforeAll(async () => {
    bundle = await bundleWorkflowCode({
      workflowsPath: path.join(__dirname, '../../workflows/index.ts'),
      logger: new DefaultLogger('WARN'),
    });
  }, 60_000);

  it('has histories of both workflow types', () => {
    expect(files.some((f) => f.startsWith('monitoring-'))).toBe(true);
    expect(files.some((f) => f.startsWith('healing-'))).toBe(true);
  });

  it('has a healing whose local activity ended a workflow task before the code after it ran (the next task)', () => {
    // The layout that broke a replay when a patch was read after a local activity (docs/ARCHITECTURE.md).
    const history = historyFromJSON(JSON.parse(readFileSync(path.join(dir, 'healing-split-task.json'), 'utf8')));
    const events = history.events ?? [];
    const split = events.findIndex(
      (e, i) =>
        e.markerRecordedEventAttributes?.markerName === 'core_local_activity' &&
        events[i + 1]?.workflowTaskScheduledEventAttributes,
    );
    expect(split).toBeGreaterThan(0);
    // The next task's first command is the code after it (evidence gathered for the analysis), not a marker.
    const next = events.slice(split + 1).find((e) => e.activityTaskScheduledEventAttributes);
    expect(next?.activityTaskScheduledEventAttributes?.activityType?.name).toBe('gatherEvidence');
  });

  it('has a monitoring cycle that took the patch spend-gone-marks and spent the marks of an anomaly it fired again', () => {
    const history = historyFromJSON(
      JSON.parse(readFileSync(path.join(dir, 'monitoring-spends-gone-marks.json'), 'utf8')),
    );
    const events = history.events ?? [];
    const patches = events
      .filter((e) => e.markerRecordedEventAttributes?.markerName === 'core_patch')
      .map((e) => {
        const payload = e.markerRecordedEventAttributes?.details?.['patch-data']?.payloads?.[0];
        return (JSON.parse(Buffer.from(payload?.data ?? new Uint8Array()).toString('utf8')) as { id: string }).id;
      });
    expect(patches).toContain(SPEND_GONE_MARKS_PATCH);
    const activities = events.map((e) => e.activityTaskScheduledEventAttributes?.activityType?.name).filter(Boolean);
    expect(activities).toContain('spendGoneMarks');
    // The marks are spent after the new healing started: its child start comes first.
    const spend = events.findIndex(
      (e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'spendGoneMarks',
    );
    const start = events.findIndex((e) => e.startChildWorkflowExecutionInitiatedEventAttributes);
    expect(start).toBeGreaterThan(0);
    expect(start).toBeLessThan(spend);
  });

  it.each(files)(
    '%s',
    async (file) => {
      const history = historyFromJSON(JSON.parse(readFileSync(path.join(dir, file), 'utf8')));
      expect(history.events?.length).toBeGreaterThan(3);
      await Worker.runReplayHistory({ workflowBundle: bundle }, history, file);
    },
    60_000,
  );
});
