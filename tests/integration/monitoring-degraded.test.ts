/**
 * Redis stopped during monitoring cycles: the cycle reports `monitoring_degraded` and never turns what it cannot
 * read into pipeline anomalies. This test runs its own Redis server (a real one, on a free port) so it can stop
 * it without touching the Redis the other tests use.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Client } from '@temporalio/client';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKeys } from '../../core/keys';
import { generateDocuments } from '../../pipeline/generator';
import { createPipelineRunner, type PipelineRunner } from '../../pipeline/runner';
import { freePort } from '../../starter/temporal-local';
import { healingWorkflowId, statusQuery } from '../../workflows/definitions';
import { createTestEnv, type TestEnv, waitFor } from '../helpers/env';
import { startFakeOllama, type FakeOllama } from '../helpers/fake-ollama';
import { pipelineLogDir, waitForDocuments } from '../helpers/pipeline';
import { startSelfheal, type RunningSelfheal } from '../helpers/selfheal';
import { allocateNamespace, connectClient } from '../helpers/temporal';

function startRedis(port: number): ChildProcess {
  return spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
}

async function healingWorkflows(client: Client): Promise<{ id: string; start: number }[]> {
  const out: { id: string; start: number }[] = [];
  for await (const wf of client.workflow.list({ query: "WorkflowType = 'healingWorkflow'" })) {
    out.push({ id: wf.workflowId, start: wf.startTime.getTime() });
  }
  return out;
}

describe('Redis stopped during cycles', () => {
  let t: TestEnv;
  let port: number;
  let redisServer: ChildProcess;
  let redis: Redis;
  let runner: PipelineRunner;
  let ollama: FakeOllama;
  let selfheal: RunningSelfheal;
  let client: Client;
  let closeClient: () => Promise<void>;

  beforeAll(async () => {
    t = await createTestEnv();
    port = await freePort();
    redisServer = startRedis(port);
    const redisUrl = `redis://127.0.0.1:${port}`;
    redis = new Redis(redisUrl, { maxRetriesPerRequest: 1, retryStrategy: () => 200 });
    redis.on('error', () => undefined);
    await waitFor(
      () =>
        redis.ping().then(
          () => true,
          () => false,
        ),
      { what: 'the private Redis' },
    );
    const keys = createKeys(t.prefix);
    runner = createPipelineRunner({
      connection: { databaseUrl: t.databaseUrl, redisUrl, prefix: t.prefix },
      redis,
      keys,
      logDir: pipelineLogDir(t),
    });
    await runner.startMany([
      { stage: 'extract', count: 1 },
      { stage: 'evaluate', count: 1 },
    ]);
    const ids = await generateDocuments({ pool: t.pool, redis, keys, count: 20 });
    await waitForDocuments(t, ids);
    ollama = await startFakeOllama();
    const ns = await allocateNamespace();
    selfheal = await startSelfheal(t, ns, {
      REDIS_URL: redisUrl,
      OLLAMA_HOST: ollama.url,
      HEALTH_TARGETS: runner.healthTargets(),
    });
    ({ client, close: closeClient } = await connectClient(ns));
  });

  afterAll(async () => {
    await selfheal?.stop();
    await closeClient?.();
    await runner?.stop();
    redis?.disconnect();
    redisServer?.kill('SIGKILL');
    await ollama?.close();
    await t?.cleanup();
  });

  it('reports monitoring_degraded and no pipeline anomaly while Redis is down', async () => {
    // A few healthy cycles first.
    await waitFor(async () => (await redis.xlen(t.keys.metricsStream())) >= 3, { timeoutMs: 30_000, what: 'cycles' });
    expect(await healingWorkflows(client)).toEqual([]);

    const downAt = Date.now();
    redisServer.kill('SIGKILL');
    const degradedId = healingWorkflowId('monitoring_degraded', 'redis');
    const degraded = await waitFor(async () => (await healingWorkflows(client)).find((w) => w.id === degradedId), {
      timeoutMs: 30_000,
      intervalMs: 500,
      what: degradedId,
    });
    expect(degraded.start).toBeGreaterThan(downAt);
    // Stay down for several more cycles: the pipeline looks dead from here (no queues, no heartbeats, failing
    // health), and none of that may become a pipeline anomaly.
    await new Promise((r) => setTimeout(r, 8_000));
    const during = await healingWorkflows(client);
    expect(during.map((w) => w.id)).toEqual([degradedId]);
    const handle = client.workflow.getHandle(degradedId);
    const status = (await handle.query(statusQuery)) as { anomaly: { type: string; evidence: { error: string } } };
    expect(status.anomaly.type).toBe('monitoring_degraded');
    expect(status.anomaly.evidence.error).toMatch(/.+/);

    // Redis back: cycles are written to the stream again.
    redisServer = startRedis(port);
    await waitFor(async () => (await redis.xlen(t.keys.metricsStream()).catch(() => 0)) >= 2, {
      timeoutMs: 30_000,
      intervalMs: 500,
      what: 'cycles after Redis is back',
    });
  }, 120_000);
});
