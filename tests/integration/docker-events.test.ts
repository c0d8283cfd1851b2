/**
 * Event-driven detection against the real Docker engine: MONITOR_INTERVAL is a day, so no scheduled cycle runs
 * during the test and every cycle here was triggered by an event of Docker's stream (the actions worker follows it).
 * A killed container and a Docker-unhealthy one are restarted; a container stopped on purpose whose process ignores
 * SIGTERM (exit code 137, which alone would read as a death) is left alone, because the stream said it was stopped,
 * and still after a flush of the pipeline's Redis took the record of that stop.
 */
import { ScheduleOverlapPolicy } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { healingWorkflowId, MONITOR_SCHEDULE_ID } from '../../workflows/definitions';
import { makeUnhealthy, removeTestContainers, runTestContainer, SLEEPER, STOPPABLE } from '../helpers/containers';
import { waitFor } from '../helpers/env';
import { startStack, type Stack } from '../helpers/stack';
import { cycleRecords } from '../helpers/stream';
import { endedRun } from '../helpers/temporal';

describe('event-driven detection (MONITOR_INTERVAL one day: only events start cycles)', () => {
  let s: Stack;
  const name = (role: string) => `de-${s.t.id}-${role}`;
  const cycles = (since: number) => cycleRecords(s.t.redis, s.t.keys, since);

  beforeAll(async () => {
    s = await startStack({
      ollama: { replies: [{ kind: 'status', status: 500 }] },
      async beforeSelfheal({ docker, t }) {
        const enabled = { labels: { 'selfheal.enable': 'true' } };
        await Promise.all([
          runTestContainer(docker, t, `de-${t.id}-killed`, STOPPABLE, enabled),
          runTestContainer(docker, t, `de-${t.id}-sick`, SLEEPER, { ...enabled, healthcheck: true }),
          runTestContainer(docker, t, `de-${t.id}-stubborn`, SLEEPER, enabled),
        ]);
      },
      env: () => ({
        MONITOR_INTERVAL: '86400',
        AUTO_FIX_ENABLED: 'true',
        VERIFY_DELAY: '1',
        RESTART_COOLDOWN: '0',
        CONTAINER_ALLOWLIST: 'nothing-by-name-*',
      }),
    });
  }, 180_000);

  afterAll(async () => {
    if (s) await removeTestContainers(s.docker, s.t);
    await s?.stop();
  });

  it('docker kill -s KILL: a cycle runs at once and restarts it', async () => {
    const target = name('killed');
    const before = await cycles(0);
    const killedAt = Date.now();
    await s.docker.getContainer(target).kill({ signal: 'SIGKILL' });
    const { status } = await endedRun(s.client, healingWorkflowId('unhealthy_container', target), { since: killedAt });
    expect(status.phase).toBe('healed');
    expect(status.anomaly.summary).toBe(
      `${target}: container is exited (died without a stop: exit code 137, signal 9)`,
    );
    expect(status.actions.map((a) => [a.action, a.outcome])).toEqual([['restart_worker', 'done']]);
    expect((await s.docker.getContainer(target).inspect()).State.Running).toBe(true);
    // The cycle that saw it came after the kill: triggered, as no scheduled one runs today.
    const after = await cycles(killedAt);
    expect(after.length).toBeGreaterThan(0);
    expect(after[0]!.snapshot.containers.find((c) => c.name === target)).toMatchObject({ running: false });
    expect(before.every((r) => r.snapshot.at < killedAt)).toBe(true);
  }, 90_000);

  it('Docker marks it unhealthy: a cycle runs at once and restarts it', async () => {
    const target = name('sick');
    await waitFor(async () => (await s.docker.getContainer(target).inspect()).State.Health?.Status === 'healthy', {
      what: `${target} healthy first`,
    });
    const since = Date.now();
    makeUnhealthy(target);
    const { status } = await endedRun(s.client, healingWorkflowId('unhealthy_container', target), { since });
    expect(status.phase).toBe('healed');
    expect(status.anomaly.summary).toMatch(/Docker reports it unhealthy/);
    expect((await s.docker.getContainer(target).inspect()).State.Health?.Status).toBe('healthy');
  }, 90_000);

  it('docker stop of a process that ignores SIGTERM (exit code 137): left alone, the stream said it was stopped', async () => {
    const target = name('stubborn');
    const stoppedAt = Date.now();
    await s.docker.getContainer(target).stop({ t: 1 });
    expect((await s.docker.getContainer(target).inspect()).State.ExitCode).toBe(137);
    // Its `die` triggered a cycle, which saw it exited, stopped on purpose.
    const seen = await waitFor(
      async () =>
        (await cycles(stoppedAt))
          .map((r) => r.snapshot.containers.find((c) => c.name === target))
          .find((c) => c && !c.running && c.stopped),
      { timeoutMs: 30_000, what: `a cycle that saw ${target} stopped` },
    );
    expect(seen).toMatchObject({
      exitCode: 137,
      stopped: { how: expect.stringMatching(/^docker (stop|kill with signal 15)$/) },
    });
    await expect(
      s.client.workflow.getHandle(healingWorkflowId('unhealthy_container', target)).describe(),
    ).rejects.toThrow(/not found/i);
    expect((await s.docker.getContainer(target).inspect()).State.Running).toBe(false);

    // The pipeline's Redis is flushed (everything of the prefix, as `selfheal chaos redis-flush` does it): the stop
    // record goes with it. The actions worker still remembers the stop, so the next cycle leaves the container alone
    // (without that memory it read as "died without a stop" and was restarted), and the record is written back.
    const doomed = await s.t.redis.keys(`${s.t.prefix}*`);
    expect(doomed).toContain(s.t.keys.dockerStops());
    await s.t.redis.unlink(...doomed);
    const flushedAt = Date.now();
    // After the running cycle, if one runs (a trigger with the default overlap policy would be dropped then).
    await s.client.schedule.getHandle(MONITOR_SCHEDULE_ID).trigger(ScheduleOverlapPolicy.BUFFER_ONE);
    // A cycle whose snapshot was taken after the flush (one that read Docker's state before it proves nothing).
    const after = await waitFor(
      async () =>
        (await cycles(flushedAt))
          .filter((r) => r.snapshot.at >= flushedAt)
          .map((r) => r.snapshot.containers.find((c) => c.name === target))[0],
      { timeoutMs: 30_000, what: 'a cycle after the flush' },
    );
    expect(after).toMatchObject({
      running: false,
      exitCode: 137,
      stopped: { how: expect.stringMatching(/^docker (stop|kill with signal 15)$/) },
    });
    const stored = await s.t.redis.hget(s.t.keys.dockerStops(), target);
    expect(stored && JSON.parse(stored)).toEqual(after.stopped);
    await expect(
      s.client.workflow.getHandle(healingWorkflowId('unhealthy_container', target)).describe(),
    ).rejects.toThrow(/not found/i);
    expect((await s.docker.getContainer(target).inspect()).State.Running).toBe(false);
  }, 90_000);
});
