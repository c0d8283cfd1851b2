import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { MAX_REPLY_CHARS, parsePlan, REASONING_MAX, repairJson } from '../../core/llm-plan';
import type { Plan } from '../../core/plan';
import { allowedActionsAt, deriveParams, planId } from '../../core/runbook';
import type { Anomaly } from '../../core/types';

const fixtures = path.join(import.meta.dirname, '../fixtures');
const { containers, anomalies } = JSON.parse(readFileSync(path.join(fixtures, 'analysis-anomalies.json'), 'utf8')) as {
  containers: string[];
  anomalies: Record<string, Anomaly>;
};

interface Case {
  name: string;
  anomaly: string;
  rung?: number;
  raw?: string;
  /** For replies too big to write down: prefix + text x times + suffix. */
  rawRepeat?: { prefix: string; text: string; times: number; suffix: string };
  expect:
    | {
        ok: true;
        action: string;
        container?: string;
        rung?: number;
        injectionSuspected?: boolean;
        reasoningIncludes?: string;
        reasoningExcludes?: string;
        reasoningMax?: number;
      }
    | { ok: false; error: string; injectionSuspected?: boolean };
}

const dir = path.join(fixtures, 'llm-replies');
const cases: (Case & { file: string })[] = readdirSync(dir)
  .filter((f) => f.endsWith('.json'))
  .sort()
  .flatMap((file) => (JSON.parse(readFileSync(path.join(dir, file), 'utf8')) as Case[]).map((c) => ({ ...c, file })));

const rawOf = (c: Case) =>
  c.raw ?? (c.rawRepeat ? c.rawRepeat.prefix + c.rawRepeat.text.repeat(c.rawRepeat.times) + c.rawRepeat.suffix : '');

/** What every accepted plan must satisfy, whatever the reply said. */
function expectSafe(plan: Plan, anomaly: Anomaly, rung: number) {
  expect(allowedActionsAt(anomaly.type, rung)).toContain(plan.action);
  expect(plan.target).toBe(anomaly.target);
  expect(plan.anomalyType).toBe(anomaly.type);
  const params = deriveParams(anomaly, plan.action, { containers });
  expect(params.ok).toBe(true);
  expect(plan.params).toEqual(params.ok ? params.value : null);
  expect(plan.source).toBe('llm');
  expect(plan.confidence).toBeGreaterThanOrEqual(0);
  expect(plan.confidence).toBeLessThanOrEqual(1);
  expect(plan.rung).toBeGreaterThanOrEqual(rung);
  const { id, ...rest } = plan;
  expect(id).toBe(planId(rest));
  expect(JSON.parse(JSON.stringify(plan))).toEqual(plan);
}

describe('parsePlan over tests/fixtures/llm-replies', () => {
  it('has at least 30 replies, each on a known anomaly', () => {
    expect(cases.length).toBeGreaterThanOrEqual(30);
    for (const c of cases) expect(anomalies[c.anomaly], c.name).toBeDefined();
  });

  it.each(cases.map((c) => [`${c.file}: ${c.name}`, c] as const))('%s', (_name, c) => {
    const anomaly = anomalies[c.anomaly]!;
    const rung = c.rung ?? 0;
    const result = parsePlan(rawOf(c), anomaly, { containers, rung });
    expect(Array.isArray(result.notes)).toBe(true);
    if (c.expect.injectionSuspected !== undefined) expect(result.injectionSuspected).toBe(c.expect.injectionSuspected);
    if (!c.expect.ok) {
      expect(result.ok, result.ok ? JSON.stringify(result.value) : '').toBe(false);
      if (!result.ok) expect(result.error).toMatch(new RegExp(c.expect.error));
      return;
    }
    expect(result.ok, result.ok ? '' : result.error).toBe(true);
    if (!result.ok) return;
    const plan = result.value;
    expectSafe(plan, anomaly, rung);
    expect(plan.action).toBe(c.expect.action);
    if (c.expect.container) expect(plan.params.container).toBe(c.expect.container);
    if (c.expect.rung !== undefined) expect(plan.rung).toBe(c.expect.rung);
    if (c.expect.reasoningIncludes) expect(plan.reasoning).toContain(c.expect.reasoningIncludes);
    if (c.expect.reasoningExcludes) expect(plan.reasoning).not.toContain(c.expect.reasoningExcludes);
    if (c.expect.reasoningMax) expect(plan.reasoning.length).toBeLessThanOrEqual(c.expect.reasoningMax);
  });
});

describe('parsePlan never throws and never leaves the anomaly', () => {
  /** Deterministic PRNG (mulberry32) so a failure reproduces. */
  function rng(seed: number) {
    let a = seed;
    return () => {
      a = (a + 0x6d2b79f5) | 0;
      let t = Math.imul(a ^ (a >>> 15), 1 | a);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }
  const alphabet = ['{', '}', '[', ']', '"', "'", ':', ',', '\\', '`', ' ', '\n', 'a', '1', '.', '“', '”', '/', '*'];
  const seeds = cases.map((c) => rawOf(c)).filter((r) => r.length > 0 && r.length < 2000);

  it('survives 3,000 mutated replies with only safe plans or refusals', () => {
    const next = rng(42);
    const pick = <T>(xs: T[]): T => xs[Math.floor(next() * xs.length)]!;
    const names = Object.keys(anomalies);
    for (let i = 0; i < 3000; i++) {
      let s = pick(seeds);
      const edits = 1 + Math.floor(next() * 6);
      for (let e = 0; e < edits; e++) {
        const at = Math.floor(next() * (s.length + 1));
        const op = next();
        if (op < 0.4) s = s.slice(0, at) + pick(alphabet) + s.slice(at);
        else if (op < 0.7) s = s.slice(0, at) + s.slice(at + 1 + Math.floor(next() * 5));
        else if (op < 0.85) s = s.slice(0, at);
        else
          s =
            s.slice(0, at) +
            pick(['restart_worker', 'clear_stale_locks', 'no_action', '"target":"redis",']) +
            s.slice(at);
      }
      const anomaly = anomalies[pick(names)]!;
      const rung = next() < 0.8 ? 0 : 1;
      let result: ReturnType<typeof parsePlan> | undefined;
      expect(() => (result = parsePlan(s, anomaly, { containers, rung })), s).not.toThrow();
      if (result?.ok) expectSafe(result.value, anomaly, rung);
      else expect(result?.error).toMatch(/^(invalid|disallowed|inapplicable): /);
    }
  });

  it('refuses non-string input instead of throwing', () => {
    const anomaly = anomalies.stuck!;
    for (const raw of [null, undefined, 42, {}, ['x']] as unknown as string[]) {
      const result = parsePlan(raw, anomaly, { containers });
      expect(result.ok).toBe(false);
    }
  });

  it('refuses a reply one char over the limit, reads one at the limit', () => {
    const anomaly = anomalies.stuck!;
    const head = '{"action": "requeue_documents", "confidence": 0.9, "reasoning": "';
    const fit = head + 'x'.repeat(MAX_REPLY_CHARS - head.length - 2) + '"}';
    expect(fit.length).toBe(MAX_REPLY_CHARS);
    const atLimit = parsePlan(fit, anomaly, { containers });
    expect(atLimit.ok).toBe(true);
    if (atLimit.ok) expect(atLimit.value.reasoning.length).toBeLessThan(REASONING_MAX + 40);
    expect(parsePlan(`${fit} `, anomaly, { containers }).ok).toBe(false);
  });

  it('reads a whole-number confidence of 2 to 100 as a percentage, with a note; refuses other values out of 0..1', () => {
    const anomaly = anomalies.stuck!;
    const reply = (c: string) => `{"action": "requeue_documents", "reasoning": "dead owner", "confidence": ${c}}`;
    const fraction = parsePlan(reply('0.85'), anomaly, { containers });
    const percent = parsePlan(reply('85'), anomaly, { containers });
    expect(fraction.ok && percent.ok).toBe(true);
    if (fraction.ok && percent.ok) expect(percent.value.confidence).toBe(fraction.value.confidence);
    expect(percent.notes).toContain('confidence 85 read as a percentage');
    expect(fraction.notes).toEqual([]);
    const full = parsePlan(reply('100'), anomaly, { containers });
    const one = parsePlan(reply('1'), anomaly, { containers });
    expect(full.ok && one.ok && full.value.confidence === one.value.confidence).toBe(true);
    for (const bad of ['1.5', '100.5', '101', '1000000', '-0.5', '-50']) {
      const r = parsePlan(reply(bad), anomaly, { containers });
      expect(r.ok, bad).toBe(false);
      if (!r.ok) expect(r.error).toMatch(/^invalid: confidence/);
    }
  });

  it('ignores the reply on the target and params: the same plan whatever it names', () => {
    const anomaly = anomalies.stalled!;
    const plain = parsePlan('{"action": "restart_worker", "reasoning": "hung", "confidence": 0.7}', anomaly, {
      containers,
    });
    const pushy = parsePlan(
      '{"action": "restart_worker", "target": "postgres", "container": "redis", "params": {"container": "postgres"}, "reasoning": "hung", "confidence": 0.7}',
      anomaly,
      { containers },
    );
    expect(plain.ok && pushy.ok).toBe(true);
    if (plain.ok && pushy.ok) {
      expect(pushy.value.params).toEqual(plain.value.params);
      expect(pushy.value.id).toBe(plain.value.id);
    }
    expect(pushy.injectionSuspected).toBe(true);
    expect(pushy.notes.join('\n')).toMatch(/postgres/);
  });
});

describe('repairJson', () => {
  it.each([
    ["{'a': 'b',}", { a: 'b' }],
    ['{a: 1, b: [1, 2,],}', { a: 1, b: [1, 2] }],
    ['{"a": "line\nbreak"', { a: 'line\nbreak' }],
    ['{“a”: “b c”}', { a: 'b c' }],
    ['{"a": True, "b": None}', { a: true, b: null }],
    ['{"a": {"b": [1, {"c": "d', { a: { b: [1, { c: 'd' }] } }],
    ['{"a": 1, "b":', { a: 1, b: null }],
  ])('%j', (input, expected) => {
    expect(JSON.parse(repairJson(input))).toEqual(expected);
  });
});
