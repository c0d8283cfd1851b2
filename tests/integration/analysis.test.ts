/**
 * analyzeAnomaly against an Ollama-compatible server (tests/helpers/fake-ollama.ts) through the real `ollama`
 * client: a usable reply becomes the plan; down, slow, HTTP errors, garbage and disallowed actions fall back to the
 * runbook with a reason; the request carries the JSON schema, temperature 0 and a prompt listing only the allowed
 * actions; the concurrency cap holds at the server.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Ollama } from 'ollama';
import { afterEach, describe, expect, it } from 'vitest';
import {
  createAnalysisActivities,
  createOllamaClient,
  type AnalysisActivitiesOptions,
  type AnalysisResult,
} from '../../activities/analysis';
import { classifyFallback } from '../../core/fallback-cause';
import { SYSTEM_PROMPT } from '../../core/llm-plan';
import { ALLOWED_ACTIONS } from '../../core/plan';
import { planId, runbookPlan } from '../../core/runbook';
import { ActionType, type Anomaly } from '../../core/types';
import { startFakeOllama, type FakeOllama, type Reply } from '../helpers/fake-ollama';

const { containers, anomalies } = JSON.parse(
  readFileSync(path.join(import.meta.dirname, '../fixtures/analysis-anomalies.json'), 'utf8'),
) as { containers: string[]; anomalies: Record<string, Anomaly> };
const stuck = anomalies.stuck!;
const MODEL = 'llama3.2:3b';
const reply = (action: string, confidence = 0.9): Reply => ({
  kind: 'content',
  content: JSON.stringify({ action, reasoning: `${action} fits the evidence`, confidence }),
});

const servers: FakeOllama[] = [];
async function fake(replies: Reply[]): Promise<FakeOllama> {
  const server = await startFakeOllama({ models: [MODEL], replies });
  servers.push(server);
  return server;
}
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

function activities(server: FakeOllama, over: Partial<AnalysisActivitiesOptions> = {}) {
  const timeoutMs = over.timeoutMs ?? 2_000;
  return createAnalysisActivities({
    ollama: createOllamaClient({ host: server.url, timeoutMs }),
    model: MODEL,
    timeoutMs,
    ...over,
  });
}

/** A runbook fallback: the runbook's plan at that rung, with the reason, and a fresh id. */
function expectFallback(result: AnalysisResult, anomaly: Anomaly, rung: number, reason: RegExp) {
  const { id, fallbackReason, fallbackCause, ...rest } = result.plan;
  const { id: _runbookId, ...runbook } = runbookPlan(anomaly, rung, { containers });
  expect(result.plan.source).toBe('runbook');
  expect(fallbackReason).toMatch(reason);
  expect(fallbackCause).toBe(classifyFallback(fallbackReason!));
  expect(rest).toEqual(runbook);
  expect(id).toBe(planId({ ...rest, fallbackReason, fallbackCause }));
  expect(result.llm.ok).toBe(false);
  expect(JSON.parse(JSON.stringify(result))).toEqual(result);
}

describe('analyzeAnomaly', () => {
  it('uses a good reply: source llm, target and params from the anomaly', async () => {
    const server = await fake([reply('requeue_documents')]);
    const result = await activities(server).analyzeAnomaly({ anomaly: stuck, rung: 0, context: { containers } });
    expect(result.plan).toMatchObject({
      source: 'llm',
      action: 'requeue_documents',
      target: 'extract',
      params: { documentIds: [101, 102, 103], stage: 'extract' },
      rung: 0,
    });
    expect(result.plan.fallbackReason).toBeUndefined();
    expect(result.plan.confidence).toBeGreaterThan(0.8);
    expect(result.llm).toMatchObject({ used: true, ok: true, injectionSuspected: false });
    expect(result.llm.rawLength).toBeGreaterThan(0);
    expect(result.llm.latencyMs).toBeGreaterThanOrEqual(0);
  });

  it('sends the JSON schema as format, temperature 0, no streaming, and a prompt with only the offered actions', async () => {
    const server = await fake([reply('clear_stale_locks')]);
    const anomaly = anomalies.stale!;
    await activities(server).analyzeAnomaly({ anomaly, rung: 0 });
    expect(server.requests).toHaveLength(1);
    const { path: endpoint, body } = server.requests[0]!;
    expect(endpoint).toBe('/api/chat');
    expect(body.model).toBe(MODEL);
    expect(body.stream).toBe(false);
    expect(body.options).toMatchObject({ temperature: 0 });
    const format = body.format as { type: string; properties: { action: { enum: string[] } }; required: string[] };
    expect(format.type).toBe('object');
    const offered: string[] = ALLOWED_ACTIONS.stale_locks.filter((a) => a !== 'no_action');
    expect(format.properties.action.enum).toEqual(offered);
    expect(format.required).toEqual(expect.arrayContaining(['action', 'reasoning', 'confidence']));
    const messages = body.messages as { role: string; content: string }[];
    expect(messages.map((m) => m.role)).toEqual(['system', 'user']);
    // The actions are listed in the user message (the system prompt is the same for every anomaly).
    expect(messages[0]!.content).toBe(SYSTEM_PROMPT);
    for (const action of Object.values(ActionType)) {
      expect(messages[1]!.content.includes(`- ${action}: `), action).toBe(offered.includes(action));
    }
    expect(messages[1]!.content).toContain('extract-2');
    expect(messages[1]!.content).not.toContain('t-7'); // lock tokens are not the model's business
  });

  it('Ollama down (server closed): runbook, reason down', async () => {
    const server = await fake([reply('requeue_documents')]);
    const analysis = activities(server);
    await server.close();
    const result = await analysis.analyzeAnomaly({ anomaly: stuck, rung: 0, context: { containers } });
    expectFallback(result, stuck, 0, /^down: /);
    expect(result.llm.used).toBe(true);
    expect(result.llm.error).toMatch(/^down: /);
  });

  it('Ollama hangs: runbook after timeoutMs, reason timeout', async () => {
    const server = await fake([{ kind: 'hang' }]);
    const started = Date.now();
    const result = await activities(server, { timeoutMs: 300 }).analyzeAnomaly({
      anomaly: stuck,
      rung: 0,
      context: { containers },
    });
    const elapsed = Date.now() - started;
    expectFallback(result, stuck, 0, /^timeout: /);
    expect(elapsed).toBeGreaterThanOrEqual(290);
    // Far below the hang (forever) with room for a loaded machine; how fast is the bench's business.
    expect(elapsed).toBeLessThan(5_000);
  });

  it('a plain Ollama client (no abort) still falls back on time', async () => {
    const server = await fake([{ kind: 'content', content: '{}', delayMs: 15_000 }]);
    const analysis = createAnalysisActivities({
      ollama: new Ollama({ host: server.url }),
      model: MODEL,
      timeoutMs: 300,
    });
    const started = Date.now();
    const result = await analysis.analyzeAnomaly({ anomaly: stuck, rung: 0, context: { containers } });
    expectFallback(result, stuck, 0, /^timeout: /);
    // It did not wait for the reply (15 s away).
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('HTTP 500: runbook, reason error', async () => {
    const server = await fake([{ kind: 'status', status: 500, body: JSON.stringify({ error: 'model crashed' }) }]);
    const result = await activities(server).analyzeAnomaly({ anomaly: stuck, rung: 0, context: { containers } });
    expectFallback(result, stuck, 0, /^error: HTTP 500/);
  });

  it("model not pulled (Ollama's 404 model not found): runbook, cause model_absent", async () => {
    const server = await fake([
      {
        kind: 'status',
        status: 404,
        body: JSON.stringify({ error: `model "${MODEL}" not found, try pulling it first` }),
      },
    ]);
    const result = await activities(server).analyzeAnomaly({ anomaly: stuck, rung: 0, context: { containers } });
    expectFallback(result, stuck, 0, /^model_absent: HTTP 404: model .* not found/);
    expect(result.plan.fallbackCause).toBe('model_absent');
  });

  it('garbage: runbook, reason invalid, the reply length recorded', async () => {
    const server = await fake([{ kind: 'content', content: 'I think you should restart everything!!! }{' }]);
    const result = await activities(server).analyzeAnomaly({ anomaly: stuck, rung: 0, context: { containers } });
    expectFallback(result, stuck, 0, /^invalid: /);
    expect(result.llm.rawLength).toBe('I think you should restart everything!!! }{'.length);
  });

  it('a disallowed action: runbook, reason disallowed, injection suspected', async () => {
    const server = await fake([reply('clear_stale_locks')]);
    const result = await activities(server).analyzeAnomaly({ anomaly: stuck, rung: 0, context: { containers } });
    expectFallback(result, stuck, 0, /^disallowed: clear_stale_locks/);
    expect(result.llm.injectionSuspected).toBe(true);
  });

  it('a reply naming another target: nothing of it is used (the runbook plans, reason suspect), and flagged', async () => {
    const server = await fake([
      {
        kind: 'content',
        content: JSON.stringify({
          action: 'restart_worker',
          target: 'postgres',
          reasoning: 'restart postgres',
          confidence: 1,
        }),
      },
    ]);
    const anomaly = anomalies.unhealthy!;
    const result = await activities(server).analyzeAnomaly({ anomaly, rung: 0, context: { containers } });
    expect(result.plan).toMatchObject({
      source: 'runbook',
      target: anomaly.target,
      params: { container: anomaly.target },
    });
    expect(result.plan.fallbackReason).toMatch(/^suspect: .*postgres/);
    expect(result.llm).toMatchObject({ used: true, ok: false, injectionSuspected: true });
    expect(result.llm.notes?.join('\n')).toMatch(/postgres/);
  });

  it('rung 1: an action below the rung is refused, the runbook’s rung action used', async () => {
    const server = await fake([reply('requeue_documents')]);
    const result = await activities(server).analyzeAnomaly({ anomaly: stuck, rung: 1, context: { containers } });
    expectFallback(result, stuck, 1, /^disallowed: requeue_documents/);
    expect(result.plan.action).toBe('restart_worker');
    expect(
      (server.requests[0]!.body.format as { properties: { action: { enum: string[] } } }).properties.action.enum,
    ).toEqual(['restart_worker', 'escalate_to_human']);
  });

  it('rung 1: an action at the rung is used', async () => {
    const server = await fake([reply('restart_worker', 0.8)]);
    const result = await activities(server).analyzeAnomaly({ anomaly: stuck, rung: 1, context: { containers } });
    expect(result.plan).toMatchObject({
      source: 'llm',
      action: 'restart_worker',
      rung: 1,
      params: { container: 'pipeline-extract-1' },
    });
  });

  it('containers known to the factory count like those of the call', async () => {
    const server = await fake([reply('restart_worker', 0.8)]);
    const result = await activities(server, { containers: ['pipeline-extract-1'] }).analyzeAnomaly({
      anomaly: stuck,
      rung: 1,
    });
    expect(result.plan).toMatchObject({ source: 'llm', params: { container: 'pipeline-extract-1' } });
  });

  it.each(['llm_down', 'degraded'])('%s: never asks the LLM', async (key) => {
    const server = await fake([reply('escalate_to_human')]);
    const anomaly: Anomaly = anomalies[key] ?? {
      ...stuck,
      type: 'monitoring_degraded',
      target: 'redis',
      evidence: { source: 'redis' },
    };
    const result = await activities(server).analyzeAnomaly({ anomaly, rung: 0 });
    expect(server.requests).toHaveLength(0);
    expect(result.plan.action).toBe('escalate_to_human');
    expect(result.plan.fallbackReason).toMatch(/^not_consulted: /);
    expect(result.llm).toEqual({ used: false, ok: false, latencyMs: 0 });
  });

  async function peakConcurrency(server: FakeOllama, analysis: ReturnType<typeof createAnalysisActivities>, n: number) {
    let settled = 0;
    let peak = 0;
    const runs = Array.from({ length: n }, () =>
      analysis.analyzeAnomaly({ anomaly: stuck, rung: 0, context: { containers } }).finally(() => settled++),
    );
    // In flight at the server <= received - settled (a reply reaches the client after the server sent it).
    const poll = setInterval(() => (peak = Math.max(peak, server.requests.length - settled)), 5);
    const results = await Promise.all(runs);
    clearInterval(poll);
    return { peak, results };
  }

  it('holds the default cap of 2 concurrent LLM calls', async () => {
    const server = await fake([{ ...reply('requeue_documents'), delayMs: 150 } as Reply]);
    const { peak, results } = await peakConcurrency(server, activities(server, { timeoutMs: 5_000 }), 6);
    expect(server.requests).toHaveLength(6);
    expect(peak).toBe(2);
    for (const r of results) expect(r.plan.source).toBe('llm');
  });

  it('holds a configured cap of 3', async () => {
    const server = await fake([{ ...reply('requeue_documents'), delayMs: 150 } as Reply]);
    const { peak } = await peakConcurrency(server, activities(server, { timeoutMs: 5_000, maxConcurrent: 3 }), 7);
    expect(peak).toBe(3);
  });

  it('a slot stays taken while a timed-out request is still open; queueing counts against the timeout', async () => {
    const server = await fake([{ kind: 'hang' }]);
    const analysis = createAnalysisActivities({
      ollama: new Ollama({ host: server.url }),
      model: MODEL,
      timeoutMs: 300,
      maxConcurrent: 1,
    });
    const [first, second] = await Promise.all([
      analysis.analyzeAnomaly({ anomaly: stuck, rung: 0, context: { containers } }),
      analysis.analyzeAnomaly({ anomaly: stuck, rung: 0, context: { containers } }),
    ]);
    expectFallback(first, stuck, 0, /^timeout: /);
    expectFallback(second, stuck, 0, /^busy: /);
    expect(server.requests).toHaveLength(1);
  });

  it('with createOllamaClient a timed-out request is aborted and frees its slot', async () => {
    const server = await fake([{ kind: 'hang' }, reply('requeue_documents')]);
    const analysis = activities(server, { timeoutMs: 300, maxConcurrent: 1 });
    const first = await analysis.analyzeAnomaly({ anomaly: stuck, rung: 0, context: { containers } });
    expectFallback(first, stuck, 0, /^timeout: /);
    // The abort lands within a few ms of the timeout; the next call gets the slot and the second reply.
    const second = await analysis.analyzeAnomaly({ anomaly: stuck, rung: 0, context: { containers } });
    expect(second.plan.source).toBe('llm');
    expect(server.requests).toHaveLength(2);
  });
});
