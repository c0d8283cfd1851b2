/**
 * The full stack most integration files stand up: a test environment, a Temporal namespace of its own, the fake
 * Ollama, optionally a webhook receiver and the reference pipeline (worker containers and processes from the
 * pipeline image), `selfheal up --no-pipeline` against all of it, and a client of the namespace. `stop()` takes down
 * whatever was started, in order; when start-up throws half way, what was started is stopped and the error rethrown.
 */
import type { Client } from '@temporalio/client';
import type Docker from 'dockerode';
import { ensurePipelineImage } from '../../pipeline/image';
import type { PipelineRunner, RunningWorker } from '../../pipeline/runner';
import { createTestEnv, type TestEnv } from './env';
import { startFakeOllama, type FakeOllama } from './fake-ollama';
import { createTestRunner, stopTestPipeline, testDocker } from './pipeline';
import { startSelfheal, type RunningSelfheal } from './selfheal';
import { allocateNamespace, connectClient } from './temporal';
import { startWebhookReceiver, type WebhookReceiver } from './webhook-receiver';

/** What is up before `selfheal up` starts: its environment may use it (`ollama.url`, `runner.healthTargets()`...). */
export interface StackParts {
  t: TestEnv;
  ns: string;
  docker: Docker;
  ollama: FakeOllama;
  /** With `receiver: true`. */
  receiver?: WebhookReceiver;
  /** With `pipeline`. */
  runner?: PipelineRunner;
  /** The pipeline's workers, as `runner.startMany` started them (none without `pipeline`). */
  workers: RunningWorker[];
}

export interface Stack extends StackParts {
  selfheal: RunningSelfheal;
  client: Client;
  stop(): Promise<void>;
}

export interface StackOptions {
  ollama?: Parameters<typeof startFakeOllama>[0];
  receiver?: boolean;
  pipeline?: {
    work?: { minMs?: number; maxMs?: number };
    workers: Parameters<PipelineRunner['startMany']>[0];
  };
  /** Runs once the pipeline is up, before `selfheal up` (e.g. to start traffic). */
  beforeSelfheal?(parts: StackParts): void | Promise<void>;
  /** `selfheal up`'s environment on top of the test configuration. */
  env?(parts: StackParts): Record<string, string>;
}

export async function startStack(opts: StackOptions = {}): Promise<Stack> {
  const started: Partial<Stack> & { docker: Docker; workers: RunningWorker[] } = { docker: testDocker(), workers: [] };
  let closeClient: (() => Promise<void>) | undefined;
  const stop = async () => {
    const { t, runner, docker, selfheal } = started;
    const steps: (() => Promise<void> | undefined)[] = [
      () => selfheal?.stop(),
      () => closeClient?.(),
      () => (t && opts.pipeline ? stopTestPipeline(t, runner, docker) : undefined),
      () => started.ollama?.close(),
      () => started.receiver?.close(),
      () => t?.cleanup(),
    ];
    let failure: Error | undefined;
    for (const step of steps) {
      try {
        await step();
      } catch (err) {
        failure ??= err instanceof Error ? err : new Error(JSON.stringify(err));
      }
    }
    if (failure) throw failure;
  };
  try {
    started.t = await createTestEnv();
    started.ns = await allocateNamespace();
    started.ollama = await startFakeOllama(opts.ollama);
    if (opts.receiver) started.receiver = await startWebhookReceiver();
    if (opts.pipeline) {
      const { image } = await ensurePipelineImage(started.docker);
      const { work } = opts.pipeline;
      started.runner = createTestRunner(started.t, { docker: started.docker, image, ...(work ? { work } : {}) });
      started.workers = await started.runner.startMany(opts.pipeline.workers);
    }
    const parts = started as StackParts;
    await opts.beforeSelfheal?.(parts);
    started.selfheal = await startSelfheal(started.t, started.ns, opts.env?.(parts) ?? {});
    ({ client: started.client, close: closeClient } = await connectClient(started.ns));
  } catch (err) {
    await stop().catch(() => undefined);
    throw err;
  }
  return Object.assign(started as Stack, { stop });
}
