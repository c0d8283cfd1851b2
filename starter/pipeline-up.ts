/** The reference pipeline as `selfheal up` runs it: two workers per stage, in containers when Docker answers. */
import Docker from 'dockerode';
import { Redis } from 'ioredis';
import path from 'node:path';
import type { Config } from '../core/config';
import { createKeys, STAGES } from '../core/keys';
import { createPool } from '../db/pool';
import { createPipelineRunner } from '../pipeline/runner';
import { ensurePipelineSchema } from '../pipeline/schema';
import type { Component } from './up';

/** Workers per stage that `up` starts. */
const WORKERS_PER_STAGE = 2;

async function dockerAnswers(docker: Docker): Promise<boolean> {
  try {
    await docker.ping();
    return true;
  } catch {
    return false;
  }
}

export async function startReferencePipeline(ctx: {
  config: Config;
  env: NodeJS.ProcessEnv;
  logDir: string;
}): Promise<{ components: Component[]; workers: number; healthTargets: string }> {
  const { config, env } = ctx;
  // The pipeline's own tables, in the pipeline's database (DATABASE_URL), before any worker starts.
  const pool = createPool(config.DATABASE_URL, { max: 1, application: 'selfheal-pipeline-setup' });
  try {
    await ensurePipelineSchema(pool);
  } finally {
    await pool.end();
  }
  const redis = new Redis(config.REDIS_URL, { maxRetriesPerRequest: 2 });
  const keys = createKeys(config.REDIS_KEY_PREFIX);
  const docker = new Docker();
  // PIPELINE_WORKER_KIND=process forces local processes; by default containers when Docker answers.
  const kind = env.PIPELINE_WORKER_KIND === 'process' || !(await dockerAnswers(docker)) ? 'process' : 'container';
  const runner = createPipelineRunner({
    connection: { databaseUrl: config.DATABASE_URL, redisUrl: config.REDIS_URL, prefix: config.REDIS_KEY_PREFIX },
    redis,
    keys,
    docker: kind === 'container' ? docker : undefined,
    logDir: path.join(ctx.logDir, 'pipeline'),
    basePort: env.PIPELINE_BASE_PORT ? Number(env.PIPELINE_BASE_PORT) : 9101,
    // Container names are global to the Docker engine: a second pipeline on the same host needs its own prefix.
    containerPrefix: env.PIPELINE_CONTAINER_PREFIX || 'pipeline',
    logLevel: config.LOG_LEVEL,
  });
  const runnerComponent: Component = {
    name: 'pipeline-runner',
    async stop() {
      await runner.stop();
      redis.disconnect();
    },
  };
  try {
    const workers = await runner.startMany(STAGES.map((stage) => ({ stage, kind, count: WORKERS_PER_STAGE })));
    const components: Component[] = [
      runnerComponent,
      ...workers.map((w) => ({
        name: w.container ?? `pipeline-${w.worker}`,
        pid: w.pid,
        stop: () => runner.stopWorker(w.worker),
      })),
    ];
    return { components, workers: workers.length, healthTargets: runner.healthTargets() };
  } catch (err) {
    await runnerComponent.stop();
    throw err;
  }
}
