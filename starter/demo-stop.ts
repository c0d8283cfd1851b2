/** The end of a demo: everything it started stopped, each step on its own so that one failing stops nothing else. */
import { Client, WorkflowNotFoundError, type Connection } from '@temporalio/client';
import type { Redis } from 'ioredis';
import type pg from 'pg';
import type { ConfigResult } from '../core/config';
import type { Chaos } from '../pipeline/chaos';
import { MONITOR_SCHEDULE_ID } from '../workflows/definitions';
import { otherHealings, type Tracked } from './demo-tracker';
import type { DemoResult } from './demo-types';
import { ensureMonitorSchedule } from '../workers/schedule';
import type { UpHandle } from './up';
import { errorFirstLine } from '../core/errors';

/** What the demo has started so far (a step that failed, or an interrupt, leaves the later ones undefined). */
export interface DemoStarted {
  handle?: UpHandle;
  connection?: Connection;
  pool?: pg.Pool;
  redis?: Redis;
  chaos?: Chaos;
  traffic?: { stop(): Promise<void> };
}

/**
 * Stops traffic, faults, open healings, the Schedule (deleted if the demo created it, else set back to the
 * caller's configuration), then everything up started; lists the healings that are no step's own in `result`.
 */
export async function stopDemo(
  started: DemoStarted,
  ctx: {
    say: (line: string) => void;
    namespace: string;
    tracked: Map<string, Tracked>;
    result: DemoResult;
    /** Whether the Schedule existed before the demo (undefined: Temporal did not answer then). */
    scheduleExisted: boolean | undefined;
    /** The caller's own configuration, for the Schedule. */
    userConfig: ConfigResult;
  },
): Promise<void> {
  const { handle, connection, pool, redis, chaos, traffic } = started;
  const { say, tracked, result, scheduleExisted, userConfig } = ctx;
  say('');
  say('stopping: traffic, faults, open healings, the Schedule, then everything up started...');
  const quietly = async (what: string, body: () => Promise<unknown>) => {
    try {
      await body();
    } catch (err) {
      say(`stopping: ${what}: ${errorFirstLine(err)}`);
    }
  };
  if (traffic) await quietly('traffic', () => traffic.stop());
  if (chaos) await quietly('clearing faults', () => chaos.clear());
  if (connection) {
    const client = new Client({ connection, namespace: ctx.namespace });
    for (const t of tracked.values()) {
      if (t.closed) continue;
      await quietly(`terminating ${t.workflowId}`, async () => {
        try {
          await client.workflow.getHandle(t.workflowId, t.runId).terminate('selfheal demo stopped');
          say(`stopping: terminated ${t.workflowId} (still ${t.status?.phase ?? 'running'})`);
        } catch (err) {
          // It ended between the last poll and now: nothing to stop.
          if (!(err instanceof WorkflowNotFoundError)) throw err;
        }
      });
    }
    await quietly('the Schedule', async () => {
      if (scheduleExisted === false) {
        await client.schedule.getHandle(MONITOR_SCHEDULE_ID).delete();
        say(`stopping: Schedule ${MONITOR_SCHEDULE_ID} deleted (the demo created it)`);
      } else if (userConfig.ok) {
        await ensureMonitorSchedule(client, userConfig.config);
        say(`stopping: Schedule ${MONITOR_SCHEDULE_ID} set back to your configuration`);
      }
    });
  }
  result.otherHealings.push(...otherHealings(tracked, result.steps));
  redis?.disconnect();
  if (pool) await quietly('Postgres pool', () => pool.end());
  if (connection) await quietly('Temporal connection', () => connection.close());
  if (handle) await quietly('up', () => handle.stop());
  say('stopped.');
}
