/**
 * The Schedule `selfheal-monitor` is created at start-up, and updated on the next start-up to the current
 * configuration without losing an operator's pause.
 */
import type { Client } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig, type Config } from '../../core/config';
import { ensureMonitorSchedule, monitoringInput } from '../../workers/schedule';
import { MONITOR_SCHEDULE_ID } from '../../workflows/definitions';
import { allocateNamespace, connectClient } from '../helpers/temporal';

function config(env: Record<string, string>): Config {
  const r = parseConfig(env);
  if (!r.ok) throw new Error(JSON.stringify(r.problems));
  return r.config;
}

describe('ensureMonitorSchedule', () => {
  let client: Client;
  let close: () => Promise<void>;
  beforeAll(async () => {
    ({ client, close } = await connectClient(await allocateNamespace()));
  });
  afterAll(async () => {
    await client.schedule
      .getHandle(MONITOR_SCHEDULE_ID)
      .delete()
      .catch(() => undefined);
    await close();
  });

  it('creates, then updates spec and input while keeping an operator pause', async () => {
    const first = config({ MONITOR_INTERVAL: '30', QUEUE_STALL_THRESHOLD: '100' });
    expect(await ensureMonitorSchedule(client, first)).toBe('created');
    const handle = client.schedule.getHandle(MONITOR_SCHEDULE_ID);
    let d = await handle.describe();
    expect(d.spec.intervals?.[0]?.every).toBe(30_000);
    expect(d.policies.overlap).toBe('SKIP');
    expect(d.policies.catchupWindow).toBe(30_000);
    expect(d.state.paused).toBe(false);
    expect(d.action.type === 'startWorkflow' && d.action.workflowType).toBe('monitoringCycleWorkflow');

    await handle.pause('investigating an incident');

    const second = config({ MONITOR_INTERVAL: '45', QUEUE_STALL_THRESHOLD: '200' });
    expect(await ensureMonitorSchedule(client, second)).toBe('updated');
    d = await handle.describe();
    expect(d.state.paused).toBe(true);
    expect(d.state.note).toBe('investigating an incident');
    expect(d.spec.intervals?.[0]?.every).toBe(45_000);
    expect(d.policies.catchupWindow).toBe(45_000);
    // Thresholds reach the workflow as its input.
    expect(d.action.type === 'startWorkflow' && d.action.args).toEqual([monitoringInput(second)]);
  });

  it('keeps the catch-up window at Temporal’s 10 s minimum for short intervals', async () => {
    await ensureMonitorSchedule(client, config({ MONITOR_INTERVAL: '2' }));
    const d = await client.schedule.getHandle(MONITOR_SCHEDULE_ID).describe();
    expect(d.policies.catchupWindow).toBe(10_000);
  });
});
