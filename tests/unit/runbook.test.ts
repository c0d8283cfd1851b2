import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { detectStaleLocks, EVIDENCE_ID_CAP, LOCK_EVIDENCE_CAP } from '../../core/detectors';
import { combineConfidence, evidenceStrength } from '../../core/llm-plan';
import { ALLOWED_ACTIONS, type Plan } from '../../core/plan';
import {
  allowedActionsAt,
  canonicalJson,
  deriveParams,
  fnv1a64,
  OUTLIER_RESTART_CONFIDENCE,
  planId,
  RUNBOOK_CONFIDENCE,
  runbookConfidence,
  runbookPlan,
  withPlanId,
} from '../../core/runbook';
import type { Anomaly, AnomalyType } from '../../core/types';
import { snapshot, T0, thresholds } from '../helpers/snapshots';

const { containers, anomalies } = JSON.parse(
  readFileSync(path.join(import.meta.dirname, '../fixtures/analysis-anomalies.json'), 'utf8'),
) as { containers: string[]; anomalies: Record<string, Anomaly> };
const ctx = { containers };

const a = (key: string): Anomaly => anomalies[key]!;
const make = (type: AnomalyType, evidence: Record<string, unknown>, target = 'extract'): Anomaly => ({
  type,
  target,
  severity: 'warning',
  fingerprint: `${type}:${target}`,
  summary: `${type} on ${target}`,
  evidence,
  detectedAt: T0,
});

function expectRunbookPlan(plan: Plan, anomaly: Anomaly) {
  expect(plan.target).toBe(anomaly.target);
  expect(plan.anomalyType).toBe(anomaly.type);
  expect([...ALLOWED_ACTIONS[anomaly.type], 'escalate_to_human']).toContain(plan.action);
  expect(plan.action).not.toBe('no_action');
  expect(plan.source).toBe('runbook');
  expect(plan.confidence).toBe(runbookConfidence(anomaly, plan.action));
  const outlierRestart =
    plan.action === 'restart_worker' &&
    ['error_rate_spike', 'processing_time_anomaly'].includes(anomaly.type) &&
    Array.isArray(anomaly.evidence.suspects) &&
    anomaly.evidence.suspects.length > 0;
  expect(plan.confidence).toBe(outlierRestart ? OUTLIER_RESTART_CONFIDENCE : RUNBOOK_CONFIDENCE[anomaly.type]);
  expect(plan.fallbackReason).toBeUndefined();
  const { id, ...rest } = plan;
  expect(id).toBe(planId(rest));
  expect(JSON.parse(JSON.stringify(plan))).toEqual(plan);
}

describe('runbookPlan per type and rung', () => {
  const table: { name: string; anomaly: Anomaly; rung: number; action: string; params?: object; planRung?: number }[] =
    [
      {
        name: 'stuck documents, rung 0: requeue them to their stage',
        anomaly: a('stuck'),
        rung: 0,
        action: 'requeue_documents',
        params: { documentIds: [101, 102, 103], stage: 'extract' },
      },
      {
        name: 'stuck documents, rung 1: restart the dead owner, a known container',
        anomaly: a('stuck'),
        rung: 1,
        action: 'restart_worker',
        params: { container: 'pipeline-extract-1' },
      },
      { name: 'stuck documents, rung 2: escalate', anomaly: a('stuck'), rung: 2, action: 'escalate_to_human' },
      { name: 'stuck documents, past the ladder: escalate', anomaly: a('stuck'), rung: 9, action: 'escalate_to_human' },
      {
        name: 'stuck documents whose owner is no known container, rung 1: skip the restart, escalate',
        anomaly: a('stuck_unknown_owner'),
        rung: 1,
        action: 'escalate_to_human',
        planRung: 2,
      },
      {
        name: 'stale locks, rung 0: clear exactly the dead owner’s observed locks',
        anomaly: a('stale'),
        rung: 0,
        action: 'clear_stale_locks',
        params: {
          locks: [
            { documentId: '7', owner: 'extract-2', token: 't-7' },
            { documentId: '8', owner: 'extract-2', token: 't-8' },
          ],
        },
      },
      { name: 'stale locks, rung 1: escalate', anomaly: a('stale'), rung: 1, action: 'escalate_to_human' },
      {
        name: 'unhealthy container, rung 0: restart the target',
        anomaly: a('unhealthy'),
        rung: 0,
        action: 'restart_worker',
        params: { container: 'pipeline-evaluate-1' },
      },
      { name: 'unhealthy container, rung 1: escalate', anomaly: a('unhealthy'), rung: 1, action: 'escalate_to_human' },
      {
        name: 'stalled queue with a container in evidence: restart it',
        anomaly: a('stalled'),
        rung: 0,
        action: 'restart_worker',
        params: { container: 'pipeline-evaluate-1' },
      },
      {
        name: 'stalled queue without a container in evidence: escalate',
        anomaly: a('stalled_no_container'),
        rung: 0,
        action: 'escalate_to_human',
        planRung: 1,
      },
      {
        name: 'slow processing with a container in evidence: restart it',
        anomaly: make('processing_time_anomaly', { factor: 5, containers: ['pipeline-extract-1'] }),
        rung: 0,
        action: 'restart_worker',
        params: { container: 'pipeline-extract-1' },
      },
      {
        name: 'slow processing without containers: escalate',
        anomaly: make('processing_time_anomaly', { factor: 5 }),
        rung: 0,
        action: 'escalate_to_human',
        planRung: 1,
      },
      {
        name: 'error-rate spike, stage-wide (no suspect container): escalate',
        anomaly: a('error_rate'),
        rung: 0,
        action: 'escalate_to_human',
        planRung: 1,
      },
      {
        name: 'error-rate spike, rung 0, one failing worker whose peers are fine: restart it',
        anomaly: make('error_rate_spike', {
          failed: 30,
          suspects: ['pipeline-extract-1'],
          containers: ['pipeline-extract-1'],
        }),
        rung: 0,
        action: 'restart_worker',
        params: { container: 'pipeline-extract-1' },
      },
      {
        name: 'error-rate spike, rung 1 (the restart did not heal): escalate',
        anomaly: make('error_rate_spike', { suspects: ['pipeline-extract-1'], containers: ['pipeline-extract-1'] }),
        rung: 1,
        action: 'escalate_to_human',
      },
      {
        name: 'slowdown, rung 0, one slow worker whose peers are fine: restart it',
        anomaly: make('processing_time_anomaly', {
          factor: 8,
          suspects: ['pipeline-extract-2'],
          containers: ['pipeline-extract-2'],
        }),
        rung: 0,
        action: 'restart_worker',
        params: { container: 'pipeline-extract-2' },
      },
      {
        name: 'slowdown, stage-wide (no suspect): escalate, never a blind restart',
        anomaly: make('processing_time_anomaly', { factor: 8, suspects: [], containers: [] }),
        rung: 0,
        action: 'escalate_to_human',
        planRung: 1,
      },
      {
        name: 'lost documents: requeue to the stage in evidence',
        anomaly: a('lost'),
        rung: 0,
        action: 'requeue_documents',
        params: { documentIds: [401, 402], stage: 'evaluate' },
      },
      {
        name: 'orphaned entries: remove the exact observed entries',
        anomaly: a('orphaned'),
        rung: 0,
        action: 'remove_orphaned_entries',
        params: {
          entries: [
            { queue: 'queue:extract', id: '301', count: 1 },
            { queue: 'queue:extract', id: '302', count: 2 },
          ],
        },
      },
      {
        name: 'poison document: quarantine it with the reason',
        anomaly: a('poison'),
        rung: 0,
        action: 'quarantine_document',
        params: { documentIds: [555], reason: 'document 555 crashed 3 different workers' },
      },
      { name: 'llm unavailable: escalate', anomaly: a('llm_down'), rung: 0, action: 'escalate_to_human' },
      {
        name: 'monitoring degraded: escalate',
        anomaly: make('monitoring_degraded', { source: 'redis', error: 'ECONNREFUSED' }, 'redis'),
        rung: 0,
        action: 'escalate_to_human',
      },
      {
        name: 'a negative or fractional rung counts as 0',
        anomaly: a('stuck'),
        rung: -1.5,
        action: 'requeue_documents',
        planRung: 0,
      },
    ];
  it.each(table)('$name', (c) => {
    const plan = runbookPlan(c.anomaly, c.rung, ctx);
    expectRunbookPlan(plan, c.anomaly);
    expect(plan.action).toBe(c.action);
    if (c.params) expect(plan.params).toEqual(c.params);
    if (c.action === 'escalate_to_human') expect(plan.params.reason).toBe(c.anomaly.summary);
    expect(plan.rung).toBe(c.planRung ?? Math.max(0, c.rung));
  });

  it('every type, every rung up to 5: a plan on the anomaly, escalation at the end', () => {
    for (const type of Object.keys(ALLOWED_ACTIONS) as AnomalyType[]) {
      const anomaly = make(type, { documentIds: [1], containers: ['pipeline-x'], locks: [], entries: [] });
      for (let rung = 0; rung <= 5; rung++) expectRunbookPlan(runbookPlan(anomaly, rung, ctx), anomaly);
      expect(runbookPlan(anomaly, 5, ctx).action).toBe('escalate_to_human');
    }
  });

  it('explains skipped rungs in its reasoning', () => {
    const plan = runbookPlan(a('stuck_unknown_owner'), 1, ctx);
    expect(plan.reasoning).toMatch(/restart_worker skipped: no known container/);
  });
});

describe('parameters come only from the evidence', () => {
  it('keeps only positive integer document ids (numeric strings read), deduplicated and capped', () => {
    const ids = ['12', 12, -1, 1.5, 'x', null, 7, ...Array.from({ length: 80 }, (_, i) => 100 + i)];
    const p = deriveParams(make('stuck_documents', { documentIds: ids }), 'requeue_documents', ctx);
    expect(p.ok && p.value.documentIds?.slice(0, 3)).toEqual([12, 7, 100]);
    expect(p.ok && p.value.documentIds?.length).toBe(EVIDENCE_ID_CAP);
  });

  it('does not restart a dead owner that is not a known container', () => {
    const anomaly = make('stuck_documents', { documentIds: [1], deadOwners: ['postgres-ish'] });
    expect(deriveParams(anomaly, 'restart_worker', { containers: [] }).ok).toBe(false);
    expect(deriveParams(anomaly, 'restart_worker', { containers: ['postgres-ish'] })).toEqual({
      ok: true,
      value: { container: 'postgres-ish' },
    });
  });

  it('a restart of a container that died on a poison suspect quarantines it first', () => {
    const anomaly = make('unhealthy_container', { poisonSuspects: [42, 'x', -3] }, 'pipeline-w-1');
    expect(deriveParams(anomaly, 'restart_worker', ctx)).toEqual({
      ok: true,
      value: { container: 'pipeline-w-1', quarantineFirst: [42] },
    });
    // Only for a container's own death: a stage's anomaly restarts without it.
    const stage = make('stalled_queue', { containers: ['pipeline-ok'], poisonSuspects: [42] });
    expect(deriveParams(stage, 'restart_worker', ctx)).toEqual({ ok: true, value: { container: 'pipeline-ok' } });
  });

  it('ignores container names Docker would refuse', () => {
    const anomaly = make('stalled_queue', { containers: ['../etc', 'a b', '-x', 'pipeline-ok'] });
    expect(deriveParams(anomaly, 'restart_worker', ctx)).toEqual({ ok: true, value: { container: 'pipeline-ok' } });
  });

  it('refuses a requeue to a stage name that is not one', () => {
    const anomaly = make('lost_documents', { documentIds: [1], stage: 'queue:extract; DEL *' });
    expect(deriveParams(anomaly, 'requeue_documents', ctx).ok).toBe(false);
  });

  it('drops malformed locks and entries', () => {
    const stale = make(
      'stale_locks',
      {
        locks: [
          { documentId: '1', owner: 'w1', token: 't' },
          { documentId: '2', owner: 'w1' },
          { documentId: 3, owner: 'w1', token: 't' },
          'x',
          { documentId: '4', owner: 'w2', token: 't' },
        ],
      },
      'w1',
    );
    expect(deriveParams(stale, 'clear_stale_locks', ctx)).toEqual({
      ok: true,
      value: { locks: [{ documentId: '1', owner: 'w1', token: 't' }] },
    });
    const orphaned = make('orphaned_entries', {
      entries: [
        { queue: 'q', id: '1', count: 0 },
        { queue: 'q', id: 2, count: 1 },
        null,
        { queue: 'q', id: '3', count: 1 },
      ],
    });
    expect(deriveParams(orphaned, 'remove_orphaned_entries', ctx)).toEqual({
      ok: true,
      value: { entries: [{ queue: 'q', id: '3', count: 1 }] },
    });
  });

  it('escalation reasons are redacted and bounded', () => {
    const anomaly = { ...a('unhealthy'), summary: `token=abc123 ${'x'.repeat(1000)}` };
    const plan = runbookPlan(anomaly, 1, ctx);
    expect(plan.params.reason).not.toContain('abc123');
    expect(plan.params.reason!.length).toBeLessThan(340);
  });

  it('the stale-locks detector carries the tokens the runbook clears, all of a snapshot (200), capped beyond', () => {
    const locks = Array.from({ length: 260 }, (_, i) => ({ documentId: String(i), owner: 'dead-1', token: `tok${i}` }));
    const [anomaly] = detectStaleLocks(
      snapshot(T0, { staleLocks: locks, staleLockTotal: 260, locksTotal: 270 }),
      [],
      thresholds,
      T0,
    );
    const plan = runbookPlan(anomaly!, 0, { containers: [] });
    expect(plan.action).toBe('clear_stale_locks');
    expect(plan.params.locks).toEqual(locks.slice(0, LOCK_EVIDENCE_CAP));
    expect(LOCK_EVIDENCE_CAP).toBe(200);
    // The id list for the prompt stays short.
    expect(anomaly!.evidence.documentIds).toHaveLength(EVIDENCE_ID_CAP);
  });
});

describe('allowedActionsAt', () => {
  it('rung 0 is ALLOWED_ACTIONS; later rungs drop earlier remedies and no_action, keep escalation', () => {
    expect(allowedActionsAt('stuck_documents', 0)).toEqual(ALLOWED_ACTIONS.stuck_documents);
    expect(allowedActionsAt('stuck_documents', 1)).toEqual(['restart_worker', 'escalate_to_human']);
    expect(allowedActionsAt('stuck_documents', 7)).toEqual(['escalate_to_human']);
    expect(allowedActionsAt('error_rate_spike', 1)).toEqual(['escalate_to_human']);
    expect(allowedActionsAt('processing_time_anomaly', 1)).toEqual(['escalate_to_human']);
    expect(allowedActionsAt('llm_unavailable', 0)).toEqual(['escalate_to_human']);
  });
});

describe('planId', () => {
  const base = runbookPlan(a('stuck'), 0, ctx);
  const { id: _id, ...content } = base;

  it('FNV-1a 64 matches the reference vectors and a byte-wise reference over UTF-8', () => {
    expect(fnv1a64('')).toBe('cbf29ce484222325');
    expect(fnv1a64('a')).toBe('af63dc4c8601ec8c');
    expect(fnv1a64('foobar')).toBe('85944171f73967e8');
    const reference = (s: string) => {
      let h = 0xcbf29ce484222325n;
      for (const b of Buffer.from(s, 'utf8')) h = ((h ^ BigInt(b)) * 0x100000001b3n) & 0xffffffffffffffffn;
      return h.toString(16).padStart(16, '0');
    };
    for (const s of ['é', '文書', '🚨 x', canonicalJson(content)]) expect(fnv1a64(s)).toBe(reference(s));
  });

  it('is stable: same content, same id, whatever the key order', () => {
    const reordered = JSON.parse(JSON.stringify(content, Object.keys(content).sort().reverse())) as Omit<Plan, 'id'>;
    const shuffled = { ...reordered, params: { stage: content.params.stage, documentIds: content.params.documentIds } };
    expect(planId(shuffled)).toBe(base.id);
    expect(planId(content)).toBe(base.id);
    expect(runbookPlan(a('stuck'), 0, ctx).id).toBe(base.id);
    expect(base.id).toMatch(/^[0-9a-f]{16}$/);
    // An id already present is not part of the content.
    const withId: Plan = { ...content, id: 'other' };
    expect(planId(withId)).toBe(base.id);
    expect(withPlanId(withId).id).toBe(base.id);
  });

  it('changes with any field', () => {
    const variants: Omit<Plan, 'id'>[] = [
      { ...content, action: 'escalate_to_human' },
      { ...content, target: 'evaluate' },
      { ...content, params: { ...content.params, documentIds: [101, 102] } },
      { ...content, params: { ...content.params, documentIds: [103, 102, 101] } },
      { ...content, confidence: 0.851 },
      { ...content, source: 'llm' },
      { ...content, rung: 1 },
      { ...content, reasoning: `${content.reasoning}.` },
      { ...content, fallbackReason: 'timeout: no answer' },
    ];
    const ids = new Set(variants.map(planId));
    expect(ids.size).toBe(variants.length);
    expect(ids.has(base.id)).toBe(false);
  });
});

describe('combineConfidence = 0.5 model + 0.3 agreement + 0.2 evidence', () => {
  it.each([
    [1, true, 1, 1],
    [0, false, 0, 0],
    [0.8, true, 0.5, 0.8],
    [0.9, false, 1, 0.65],
    [1, false, 1, 0.7],
    [Number.NaN, true, 1, 0.5],
    [Number.POSITIVE_INFINITY, true, 1, 0.5],
    [-3, true, 0, 0.3],
    [7, false, 5, 0.7],
    [0.5, true, Number.NaN, 0.55],
  ])('model %s, agrees %s, evidence %s -> %s', (model, agrees, evidence, expected) => {
    expect(combineConfidence(model, agrees, evidence)).toBeCloseTo(expected, 10);
  });

  it('a plan that disagrees with the runbook never reaches the default floor (0.8)', () => {
    for (let m = 0; m <= 1; m += 0.05) expect(combineConfidence(m, false, 1)).toBeLessThan(0.8);
  });
});

describe('evidenceStrength = (severity + volume) / 2', () => {
  it.each([
    ['critical, 9+ items', { ...a('unhealthy'), evidence: { consecutiveFailures: 12 } }, 1],
    ['warning, 3 documents', a('stuck'), (0.6 + Math.log10(4)) / 2],
    ['info, no counts at all', { ...a('stuck'), severity: 'info' as const, evidence: {} }, (0.3 + 0.5) / 2],
    ['warning, an empty id list', { ...a('stuck'), evidence: { documentIds: [] } }, 0.3],
  ])('%s', (_name, anomaly, expected) => {
    expect(evidenceStrength(anomaly)).toBeCloseTo(expected, 2);
  });
});
