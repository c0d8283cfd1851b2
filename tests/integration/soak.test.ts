/**
 * The chaos soak (bench/soak.ts, `npm run bench -- soak` for half an hour) for SOAK_MINUTES (default 5) in CI: the
 * reference pipeline's worker containers under 40 documents/s, every fault of `selfheal chaos` at random times and
 * overlapping, auto-fix on. After the drain: no document lost, none processed twice, no action on a target no fault
 * accounts for, and every kind of fault injected was healed or escalated at least once (not all missed). The seed is
 * printed (SOAK_SEED repeats a run).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runSoak, soakSummary, SOAK_ENV, startLlmStandIn, type LlmStandIn, type SoakResult } from '../../bench/soak';
import { pipelineLogDir } from '../helpers/pipeline';
import { startStack, type Stack } from '../helpers/stack';

const MINUTES = Number(process.env.SOAK_MINUTES ?? '5');
const SEED = process.env.SOAK_SEED ? Number(process.env.SOAK_SEED) : Math.floor(Math.random() * 2 ** 31);
const DRAIN_S = 300;

describe(`chaos soak, ${MINUTES} min`, () => {
  let s: Stack | undefined;
  let llm: LlmStandIn | undefined;

  beforeAll(async () => {
    llm = await startLlmStandIn();
    const url = llm.url;
    s = await startStack({
      pipeline: {
        workers: [
          { stage: 'extract', kind: 'container', count: 2 },
          { stage: 'evaluate', kind: 'container', count: 2 },
        ],
      },
      env: (p) => ({ ...SOAK_ENV, OLLAMA_HOST: url, HEALTH_TARGETS: p.runner!.healthTargets() }),
    });
  }, 300_000);

  afterAll(async () => {
    await s?.stop();
    await llm?.stop();
  }, 120_000);

  it(
    'no document lost or processed twice, no false remediation, every fault kind healed or escalated',
    async () => {
      console.log(`soak seed ${SEED} (SOAK_SEED=${SEED} repeats it)`);
      const stack = s!;
      const result: SoakResult = await runSoak({
        pool: stack.t.pool,
        redis: stack.t.redis,
        keys: stack.t.keys,
        docker: stack.docker,
        workers: stack.workers.map((w) => ({
          worker: w.worker,
          stage: w.stage,
          container: w.container!,
          healthUrl: w.healthUrl,
        })),
        llm: llm!,
        spawnEnv: { ...process.env, ...stack.t.env },
        logDir: pipelineLogDir(stack.t),
        minutes: MINUTES,
        seed: SEED,
        drainSeconds: DRAIN_S,
        say: (line) => console.log(line),
      });
      console.table(result.table);
      for (const line of soakSummary(result)) console.log(line);
      const why = JSON.stringify({ faults: result.faults, falseRemediations: result.falseRemediations }, null, 1);

      expect(result.documents.lost, why).toBe(0);
      expect(result.documents.processedTwice, why).toBe(0);
      expect(result.falseRemediations, why).toEqual([]);
      // Every kind injected was handled at least once: healed or escalated, not all missed.
      const kinds = [...new Set(result.faults.map((f) => f.kind))];
      const handled = kinds.filter((k) =>
        result.faults.some((f) => f.kind === k && (f.outcome === 'healed' || f.outcome === 'escalated')),
      );
      expect(handled.sort(), why).toEqual(kinds.sort());
      expect(result.documents.total).toBeGreaterThan(0);
    },
    (MINUTES * 60 + DRAIN_S + 300) * 1000,
  );
});
