/** The LLM fault: its Docker container stopped, else its registered local process stopped by SIGSTOP. */
import {
  ChaosError,
  llmKey,
  processState,
  type ChaosContext,
  type ChaosResult,
  type LlmProcess,
} from './chaos-context';
import { processRunsCommand } from './registry';
import { errorMessage } from '../core/errors';

export function llmFaults(ctx: ChaosContext) {
  const { opts, redis, keys, record, waitFor } = ctx;

  async function findLlmProcess(): Promise<LlmProcess | undefined> {
    const raws = [await redis.get(llmKey(keys)), await redis.hget(keys.pipelineWorkers(), 'llm')];
    for (const raw of raws) {
      if (!raw) continue;
      try {
        const v = JSON.parse(raw) as Partial<LlmProcess>;
        if (typeof v.pid === 'number' && Number.isInteger(v.pid) && v.pid > 0) {
          return { pid: v.pid, url: v.url, argv: Array.isArray(v.argv) ? v.argv : undefined };
        }
      } catch {
        /* not ours */
      }
    }
    return undefined;
  }

  async function llmDown(): Promise<ChaosResult> {
    const name = opts.ollamaContainer ?? process.env.OLLAMA_CONTAINER ?? 'ollama';
    let dockerNote = 'no Docker client';
    if (opts.docker) {
      const c = opts.docker.getContainer(name);
      let running: boolean | undefined;
      try {
        running = (await c.inspect()).State.Running;
      } catch (err) {
        dockerNote = (err as { statusCode?: number }).statusCode === 404 ? 'no such container' : errorMessage(err);
      }
      if (running === false) return { fault: 'llm-down', via: 'container', container: name, alreadyStopped: true };
      if (running) {
        await c.stop({ t: 5 });
        await record({ fault: 'llm-down', at: Date.now(), via: 'container', container: name });
        return { fault: 'llm-down', via: 'container', container: name, state: (await c.inspect()).State.Status };
      }
    }
    const llm = await findLlmProcess();
    if (llm && processRunsCommand(llm.pid, llm.argv)) {
      process.kill(llm.pid, 'SIGSTOP');
      await waitFor(() => processState(llm.pid) === 'T', 2_000);
      await record({ fault: 'llm-down', at: Date.now(), via: 'process', pid: llm.pid, argv: llm.argv });
      return {
        fault: 'llm-down',
        via: 'process',
        pid: llm.pid,
        url: llm.url,
        signal: 'SIGSTOP',
        state: processState(llm.pid),
      };
    }
    throw new ChaosError(
      'llm_not_found',
      `llm-down: found no Docker container "${name}" (${dockerNote}; set OLLAMA_CONTAINER to name another) and no ` +
        `running local LLM process registered in Redis (${llmKey(keys)}, or field "llm" of ${keys.pipelineWorkers()})` +
        (llm ? `; the registered pid ${llm.pid} is not running` : ''),
    );
  }

  return { llmDown };
}
