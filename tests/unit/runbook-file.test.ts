import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_RUNBOOKS_FILE, readRunbooksFile } from '../../activities/runbook-source';
import { llmReplyJsonSchema, offeredActionsAt, parsePlan } from '../../core/llm-plan';
import { ALLOWED_ACTIONS } from '../../core/plan';
import { allowedActionsAt, ladderIndex, runbookPlan } from '../../core/runbook';
import { parseRunbooks, resolveRunbook, type RunbookFile } from '../../core/runbook-file';
import { evaluateSafety, type SafetyContext } from '../../core/safety';
import { AnomalyType, type Anomaly } from '../../core/types';

const { containers, anomalies } = JSON.parse(
  readFileSync(path.join(import.meta.dirname, '../fixtures/analysis-anomalies.json'), 'utf8'),
) as { containers: string[]; anomalies: Record<string, Anomaly> };

const parsed = (text: string): RunbookFile => {
  const r = parseRunbooks(text, 'rb.yaml');
  if (!r.ok) throw new Error(r.error);
  return r.value;
};
const errorOf = (text: string): string => {
  const r = parseRunbooks(text, 'rb.yaml');
  if (r.ok) throw new Error('expected an error');
  return r.error;
};

describe('the built-in runbook file', () => {
  const read = readRunbooksFile(undefined);
  it('is runbooks/default.yaml, valid', () => {
    expect(DEFAULT_RUNBOOKS_FILE).toBe(path.resolve(import.meta.dirname, '../../runbooks/default.yaml'));
    expect(read.ok, read.ok ? '' : read.error).toBe(true);
  });

  it("reproduces today's ladders exactly: one entry per anomaly type, no target, ALLOWED_ACTIONS in order", () => {
    if (!read.ok) throw new Error(read.error);
    const types = read.value.runbooks.map((e) => e.type);
    expect([...types].sort()).toEqual(Object.values(AnomalyType).sort());
    for (const entry of read.value.runbooks) {
      expect(entry.target).toBeUndefined();
      expect(entry.ladder).toEqual(ALLOWED_ACTIONS[entry.type]);
      // Nothing else is set: cooldown, breaker, verify delay and approval keep the configured values.
      expect(Object.keys(entry).sort()).toEqual(['ladder', 'type']);
    }
  });

  it('gives the same plans as the built-in ladders at every rung, and the same LLM action lists', () => {
    if (!read.ok) throw new Error(read.error);
    for (const anomaly of Object.values(anomalies)) {
      const runbook = resolveRunbook(read.value, anomaly.type, anomaly.target);
      expect(runbook.approval).toBe('policy');
      for (const rung of [0, 1, 2, 3, 9]) {
        expect(runbookPlan(anomaly, rung, { containers, ladder: runbook.ladder })).toEqual(
          runbookPlan(anomaly, rung, { containers }),
        );
        expect(allowedActionsAt(anomaly.type, rung, runbook.ladder)).toEqual(allowedActionsAt(anomaly.type, rung));
        expect(llmReplyJsonSchema(anomaly.type, rung, runbook.ladder)).toEqual(llmReplyJsonSchema(anomaly.type, rung));
      }
    }
  });
});

describe("the README's example", () => {
  it('is a valid runbooks file', () => {
    const readme = readFileSync(path.join(import.meta.dirname, '../../README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('### Runbooks as files'));
    const example = /```yaml\n([\s\S]*?)```/.exec(section)?.[1];
    expect(example).toBeDefined();
    expect(parsed(example!).runbooks[0]).toMatchObject({ type: 'stuck_documents', ladder: ['escalate_to_human'] });
  });
});

describe('runbook file errors name the file, the line and the field', () => {
  const cases: { name: string; text: string; errors: string[] }[] = [
    {
      name: 'an action that is not one of the type',
      text: 'version: 1\nrunbooks:\n  - type: stuck_documents\n    ladder: [requeue_documents, reboot]\n',
      errors: [
        'rb.yaml:4: runbooks[0].ladder[1]: "reboot" is not an action of stuck_documents (allowed: requeue_documents, restart_worker, escalate_to_human, no_action)',
      ],
    },
    {
      name: 'an action of another type (block list: the line of the item)',
      text: 'version: 1\nrunbooks:\n  - type: stale_locks\n    ladder:\n      - escalate_to_human\n      - restart_worker\n',
      errors: [
        'rb.yaml:6: runbooks[0].ladder[1]: "restart_worker" is not an action of stale_locks (allowed: clear_stale_locks, escalate_to_human, no_action)',
      ],
    },
    {
      name: 'an unknown field, also in the breaker',
      text: 'version: 1\nrunbooks:\n  - type: stalled_queue\n    colour: red\n    breaker:\n      restarts: 2\n      windowSeconds: 60\n      extra: 1\n',
      errors: [
        'rb.yaml:4: runbooks[0].colour: unknown field "colour"',
        'rb.yaml:8: runbooks[0].breaker.extra: unknown field "extra"',
      ],
    },
    {
      name: 'a YAML syntax error',
      text: 'version: 1\nrunbooks:\n  - type: stuck_documents\n    ladder: [a, b\n  - type: x\n',
      errors: [expect.stringMatching(/^rb\.yaml:[45]: /)],
    },
    {
      name: 'a missing type (the line of its entry), an unknown type, a bad version',
      text: 'version: 2\nrunbooks:\n  - ladder: [escalate_to_human]\n  - type: stuck_document\n',
      errors: [
        'rb.yaml:1: version: expected 1 (the only format version)',
        expect.stringMatching(/^rb\.yaml:3: runbooks\[0\]\.type: expected an anomaly type/),
        expect.stringMatching(/^rb\.yaml:4: runbooks\[1\]\.type: expected an anomaly type/),
      ],
    },
    {
      name: 'bad numbers and an unknown approval',
      text: 'version: 1\nrunbooks:\n  - type: unhealthy_container\n    verifyDelaySeconds: -1\n    cooldownSeconds: 1.5\n    approval: sometimes\n    breaker: { restarts: 0, windowSeconds: 60 }\n',
      errors: [
        'rb.yaml:4: runbooks[0].verifyDelaySeconds: expected a whole number of seconds >= 0',
        'rb.yaml:5: runbooks[0].cooldownSeconds: expected a whole number of seconds >= 0',
        'rb.yaml:6: runbooks[0].approval: expected always or policy',
        'rb.yaml:7: runbooks[0].breaker.restarts: expected a whole number of restarts >= 1',
      ],
    },
    {
      name: 'two entries for one type and target, an empty ladder, a repeated action',
      text: 'version: 1\nrunbooks:\n  - type: stuck_documents\n  - type: lost_documents\n    ladder: []\n  - type: stuck_documents\n  - type: poison_document\n    ladder: [escalate_to_human, escalate_to_human]\n',
      errors: [
        'rb.yaml:5: runbooks[1].ladder: expected at least one action',
        'rb.yaml:6: runbooks[2].type: runbooks[0] already covers stuck_documents (no target)',
        'rb.yaml:8: runbooks[3].ladder[1]: "escalate_to_human" is already on the ladder',
      ],
    },
    {
      name: 'a field whose value is a block below its key is named by the key (an unknown one, a breaker missing a field)',
      text: 'version: 1\nrunbooks:\n  - type: stalled_queue\n    extra:\n      a: 1\n    breaker:\n      restarts: 2\n',
      errors: [
        'rb.yaml:4: runbooks[0].extra: unknown field "extra"',
        expect.stringMatching(/^rb\.yaml:6: runbooks\[0\]\.breaker\.windowSeconds: /),
      ],
    },
    {
      name: 'not a list of entries',
      text: 'version: 1\nrunbooks: stuck_documents\n',
      errors: ['rb.yaml:2: runbooks: expected a list of runbook entries'],
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      expect(errorOf(c.text).split('\n')).toEqual(c.errors);
    });
  }

  it('a duplicate key is a YAML error naming its line', () => {
    expect(errorOf('version: 1\nrunbooks: []\nversion: 1\n')).toMatch(/^rb\.yaml:3: /);
  });

  it('an unreadable file names the file', () => {
    const r = readRunbooksFile('/nonexistent/runbooks.yaml');
    expect(r.ok).toBe(false);
    expect(!r.ok && r.error).toMatch(/^\/nonexistent\/runbooks\.yaml: cannot be read: /);
  });
});

describe('resolveRunbook', () => {
  const file = parsed(`version: 1
runbooks:
  - type: stuck_documents
    ladder: [restart_worker, escalate_to_human]
    cooldownSeconds: 30
  - type: stuck_documents
    target: "extract*"
    ladder: [escalate_to_human]
    approval: always
    verifyDelaySeconds: 7
    breaker: { restarts: 1, windowSeconds: 120 }
  - type: stuck_documents
    target: "extract-eu"
    ladder: [requeue_documents]
  - type: unhealthy_container
    target: "pipeline-[ab]*"
    approval: always
`);

  it('the first matching target glob wins, wherever the entry without target stands', () => {
    expect(resolveRunbook(file, 'stuck_documents', 'extract', 'rb.yaml')).toEqual({
      ladder: ['escalate_to_human'],
      approval: 'always',
      verifyDelaySeconds: 7,
      breaker: { restarts: 1, windowSeconds: 120 },
      source: 'rb.yaml runbooks[1]',
    });
    // extract-eu matches extract* first: file order among the globs.
    expect(resolveRunbook(file, 'stuck_documents', 'extract-eu').ladder).toEqual(['escalate_to_human']);
  });

  it("an entry without target is the type's default; fields it leaves out are not set", () => {
    expect(resolveRunbook(file, 'stuck_documents', 'evaluate', 'rb.yaml')).toEqual({
      ladder: ['restart_worker', 'escalate_to_human'],
      approval: 'policy',
      cooldownSeconds: 30,
      source: 'rb.yaml runbooks[0]',
    });
  });

  it('a type without a matching entry keeps the built-in ladder; an entry without ladder too', () => {
    expect(resolveRunbook(file, 'stale_locks', 'w1')).toEqual({
      ladder: ALLOWED_ACTIONS.stale_locks,
      approval: 'policy',
      source: 'built-in',
    });
    expect(resolveRunbook(file, 'unhealthy_container', 'pipeline-c1').source).toBe('built-in');
    const a = resolveRunbook(file, 'unhealthy_container', 'pipeline-a1');
    expect(a.ladder).toEqual(ALLOWED_ACTIONS.unhealthy_container);
    expect(a.approval).toBe('always');
    expect(resolveRunbook(undefined, 'lost_documents', 'x').ladder).toEqual(ALLOWED_ACTIONS.lost_documents);
  });
});

describe('a ladder from a file', () => {
  const stuck = anomalies.stuck!;
  const escalateOnly = ['escalate_to_human'] as const;

  it('escalate-only: the runbook escalates at every rung and no requeue is allowed or offered', () => {
    for (const rung of [0, 1, 2]) {
      const plan = runbookPlan(stuck, rung, { containers, ladder: escalateOnly });
      expect(plan.action).toBe('escalate_to_human');
      expect(allowedActionsAt('stuck_documents', rung, escalateOnly)).toEqual(['escalate_to_human']);
    }
    expect(offeredActionsAt('stuck_documents', 0, escalateOnly)).toEqual(['escalate_to_human']);
    expect(JSON.stringify(llmReplyJsonSchema('stuck_documents', 0, escalateOnly))).not.toContain('requeue_documents');
  });

  it('the ladder order is the rung order; escalation is allowed even when not listed', () => {
    const ladder = ['restart_worker', 'requeue_documents'] as const;
    expect(runbookPlan(stuck, 0, { containers, ladder })).toMatchObject({ action: 'restart_worker', rung: 0 });
    expect(runbookPlan(stuck, 1, { containers, ladder })).toMatchObject({ action: 'requeue_documents', rung: 1 });
    expect(runbookPlan(stuck, 2, { containers, ladder }).action).toBe('escalate_to_human');
    expect(allowedActionsAt('stuck_documents', 0, ladder)).toEqual([...ladder, 'escalate_to_human']);
    expect(allowedActionsAt('stuck_documents', 1, ladder)).toEqual(['requeue_documents', 'escalate_to_human']);
    expect(ladderIndex('stuck_documents', 'requeue_documents', ladder)).toBe(1);
  });

  it("an LLM plan outside the file's ladder is refused (the analysis then uses the runbook's plan)", () => {
    const reply = JSON.stringify({ action: 'requeue_documents', reasoning: 'requeue them', confidence: 0.9 });
    const context = { containers, rung: 0, ladder: escalateOnly };
    const r = parsePlan(reply, stuck, context);
    expect(r.ok).toBe(false);
    expect(!r.ok && r.error).toBe(
      'disallowed: requeue_documents is not allowed for stuck_documents (allowed: escalate_to_human)',
    );
    expect(runbookPlan(stuck, 0, context).action).toBe('escalate_to_human');
    // The same reply on the built-in ladder is a plan.
    expect(parsePlan(reply, stuck, { containers, rung: 0 }).ok).toBe(true);
  });

  it("an LLM plan on the file's ladder takes its rung from that ladder", () => {
    const ladder = ['restart_worker', 'requeue_documents', 'escalate_to_human'] as const;
    const reply = JSON.stringify({ action: 'requeue_documents', reasoning: 'requeue them', confidence: 0.9 });
    const r = parsePlan(reply, stuck, { containers, rung: 0, ladder });
    expect(r.ok && r.value).toMatchObject({ action: 'requeue_documents', rung: 1, source: 'llm' });
  });
});

describe('approval: always', () => {
  const base: SafetyContext = {
    now: 1_800_000_000_000,
    autoFix: true,
    minConfidence: 0.5,
    allowlist: ['pipeline-*'],
    denylist: [],
    cooldownSeconds: 0,
    breakerRestarts: 3,
    breakerWindowSeconds: 3600,
    requeueCap: 100,
    recentRestartsOfTarget: [],
    restartsInFlightInStage: 0,
  };
  const requeue = runbookPlan(anomalies.stuck!, 0, { containers });

  it('makes an action wait for a human even with auto-fix on and a high confidence', () => {
    expect(evaluateSafety(requeue, base).decision).toBe('allow');
    const v = evaluateSafety(requeue, { ...base, approvalAlwaysBy: 'rb.yaml runbooks[0]' });
    expect(v.decision).toBe('needs_approval');
    expect(v.reasons).toContain('the runbook (rb.yaml runbooks[0]) always asks for approval');
  });

  it('never holds an escalation', () => {
    const escalate = runbookPlan(anomalies.stuck!, 0, { containers, ladder: ['escalate_to_human'] });
    expect(evaluateSafety(escalate, { ...base, approvalAlwaysBy: 'x' }).decision).toBe('allow');
  });
});
