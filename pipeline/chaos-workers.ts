/** Faults of pipeline workers: killed, hung, failing or slow (a whole stage, or one worker). */
import type { Stage } from '../core/keys';
import { ChaosError, checkStage, type ChaosContext, type ChaosResult } from './chaos-context';
import { isProcessRunning, processRunsCommand } from './registry';
import { errorMessage } from '../core/errors';

export function workerFaults(ctx: ChaosContext) {
  const { redis, keys, record, registration, needDocker, waitFor } = ctx;

  async function killWorker(worker: string): Promise<ChaosResult> {
    const reg = await registration(worker);
    if (reg.kind === 'container') {
      const docker = needDocker(`killing container worker ${worker}`);
      const name = reg.container ?? worker;
      const c = docker.getContainer(name);
      let running: boolean;
      try {
        running = (await c.inspect()).State.Running;
      } catch (err) {
        throw new ChaosError('not_running', `container ${name} of worker ${worker} not found: ${errorMessage(err)}`);
      }
      if (!running) throw new ChaosError('not_running', `container ${name} of worker ${worker} is not running`);
      await c.kill({ signal: 'SIGKILL' });
      await waitFor(async () => !(await c.inspect()).State.Running, 10_000);
      const state = (await c.inspect()).State;
      await record({ fault: 'kill-worker', at: Date.now(), registration: reg });
      return {
        fault: 'kill-worker',
        worker,
        kind: 'container',
        container: name,
        signal: 'SIGKILL',
        state: state.Status,
        exitCode: state.ExitCode,
      };
    }
    if (!processRunsCommand(reg.pid, reg.command?.argv)) {
      throw new ChaosError(
        'not_running',
        `worker ${worker} is not running (pid ${reg.pid} is gone or another program)`,
      );
    }
    process.kill(reg.pid, 'SIGKILL');
    const gone = await waitFor(() => !isProcessRunning(reg.pid), 5_000);
    await record({ fault: 'kill-worker', at: Date.now(), registration: reg });
    return { fault: 'kill-worker', worker, kind: 'process', pid: reg.pid, signal: 'SIGKILL', gone };
  }

  async function hangWorker(worker: string, silent = false): Promise<ChaosResult> {
    await registration(worker);
    const field = `hang:${worker}`;
    const value = silent ? 'silent' : '1';
    await redis.hset(keys.pipelineFaults(), field, value);
    await record({ fault: 'hang-worker', at: Date.now(), worker });
    return { fault: 'hang-worker', worker, silent, set: { [field]: value } };
  }

  /** The fault field of a stage, or of one registered worker of that stage. */
  async function stageOrWorkerField(fault: string, stage: Stage, worker: string | undefined): Promise<string> {
    if (worker === undefined) return `${fault}:${stage}`;
    const reg = await registration(worker);
    if (reg.stage !== stage) {
      throw new ChaosError('invalid_argument', `${fault}: worker ${worker} serves ${reg.stage}, not ${stage}`);
    }
    return `${fault}@${worker}`;
  }

  async function errorRate(stage: Stage, fraction: number, worker?: string): Promise<ChaosResult> {
    checkStage(stage);
    if (!Number.isFinite(fraction) || fraction < 0 || fraction > 1) {
      throw new ChaosError('invalid_argument', `error-rate: fraction must be between 0 and 1, got ${fraction}`);
    }
    const field = await stageOrWorkerField('error-rate', stage, worker);
    await redis.hset(keys.pipelineFaults(), field, String(fraction));
    await record({ fault: 'error-rate', at: Date.now(), stage, fraction, ...(worker ? { worker } : {}) });
    return { fault: 'error-rate', stage, ...(worker ? { worker } : {}), fraction, set: { [field]: String(fraction) } };
  }

  async function slow(stage: Stage, factor: number, worker?: string): Promise<ChaosResult> {
    checkStage(stage);
    if (!Number.isFinite(factor) || factor <= 0 || factor > 1_000) {
      throw new ChaosError('invalid_argument', `slow: factor must be a number above 0 and at most 1000, got ${factor}`);
    }
    const field = await stageOrWorkerField('slow', stage, worker);
    await redis.hset(keys.pipelineFaults(), field, String(factor));
    await record({ fault: 'slow', at: Date.now(), stage, factor, ...(worker ? { worker } : {}) });
    return { fault: 'slow', stage, ...(worker ? { worker } : {}), factor, set: { [field]: String(factor) } };
  }

  return { killWorker, hangWorker, errorRate, slow };
}
