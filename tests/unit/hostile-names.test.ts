/**
 * Hostile configuration and names (S8): SQL or Redis metacharacters in a stage, container, prefix, namespace or
 * approver name are refused by validation; names that arrive as data (a lock owner, a worker id, a target) are
 * handled as plain data: sanitized in workflow ids, never turned into a container to restart or a stage to push to.
 */
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../core/config';
import { detectStaleLocks } from '../../core/detectors';
import { healingWorkflowId } from '../../workflows/definitions';
import { deriveParams, runbookPlan } from '../../core/runbook';
import type { Anomaly } from '../../core/types';
import { snapshot, T0, thresholds } from '../helpers/snapshots';

const BASE = { DATABASE_URL: 'postgres://u:p@127.0.0.1:5432/db', REDIS_URL: 'redis://127.0.0.1:6379' };

describe('hostile configuration is refused, naming the variable', () => {
  it.each([
    ['PIPELINE_STAGES', 'extract;DROP TABLE documents;--'],
    ['PIPELINE_STAGES', 'extract,queue:*'],
    ['PIPELINE_STAGES', 'extract,eval uate'],
    ['HEALTH_TARGETS', "pg'--=http://127.0.0.1:1/health"],
    ['HEALTH_TARGETS', 'a*b=http://127.0.0.1:1/health'],
    ['HEALTH_TARGETS', 'worker-1=javascript:alert(1)'],
    ['REDIS_KEY_PREFIX', 'x*'],
    ['REDIS_KEY_PREFIX', 'a\r\nFLUSHALL\r\n'],
    ['REDIS_KEY_PREFIX', 'a b'],
    ['CONTAINER_ALLOWLIST', 'pipeline-*;rm -rf /'],
    ['CONTAINER_DENYLIST', '$(reboot)'],
    ['APPROVERS', "alice,bob' OR '1'='1"],
    ['TEMPORAL_NAMESPACE', "default' OR 1=1"],
    ['TEMPORAL_ADDRESS', 'localhost:7233/../../etc'],
  ])('%s=%j', (variable, value) => {
    const r = parseConfig({ ...BASE, [variable]: value });
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.problems.map((p) => p.variable)).toEqual([variable]);
  });

  it('the same variables with ordinary values pass', () => {
    const r = parseConfig({
      ...BASE,
      PIPELINE_STAGES: 'extract,evaluate',
      HEALTH_TARGETS: 'pipeline-extract-1=http://127.0.0.1:9101/health',
      REDIS_KEY_PREFIX: 'team-a:',
      CONTAINER_ALLOWLIST: 'pipeline-*',
      APPROVERS: 'alice,bob@example.org',
    });
    expect(r.ok).toBe(true);
  });
});

describe('hostile names that arrive as data stay data', () => {
  const owner = "x';DEL *;--\r\nFLUSHALL";

  it('a lock owner with metacharacters: the workflow id is sanitized, the exact token kept only as a parameter', () => {
    const [a] = detectStaleLocks(
      snapshot(T0, { staleLocks: [{ documentId: '41', owner, token: 'tok' }], staleLockTotal: 1, locksTotal: 1 }),
      [],
      thresholds,
      T0,
    );
    expect(healingWorkflowId(a!.type, a!.target)).toMatch(/^heal-stale_locks-[a-z0-9:._-]+$/);
    const plan = runbookPlan(a!, 0, { containers: [] });
    expect(plan.action).toBe('clear_stale_locks');
    // Passed to the Lua script as ARGV, compared byte for byte: never spliced into a command.
    expect(plan.params.locks).toEqual([{ documentId: '41', owner, token: 'tok' }]);
  });

  const make = (evidence: Record<string, unknown>): Anomaly => ({
    type: 'stuck_documents',
    target: 'extract',
    severity: 'warning',
    fingerprint: 'stuck_documents:extract',
    summary: 'stuck',
    evidence,
    detectedAt: T0,
  });

  it('a dead owner or container name Docker would refuse is never a restart target', () => {
    const anomaly = make({ documentIds: [1], deadOwners: [owner, '../../var/run/docker.sock', 'a b'] });
    const p = deriveParams(anomaly, 'restart_worker', { containers: [owner, '../../var/run/docker.sock', 'a b'] });
    expect(p.ok).toBe(false);
  });

  it('document ids are numbers or nothing; a stage with metacharacters is refused', () => {
    const ids = deriveParams(make({ documentIds: ['1; DROP TABLE documents', '2', 3] }), 'requeue_documents', {
      containers: [],
    });
    expect(ids.ok && ids.value.documentIds).toEqual([2, 3]);
    const lost: Anomaly = { ...make({ documentIds: [1], stage: 'queue:extract; DEL *' }), type: 'lost_documents' };
    expect(deriveParams(lost, 'requeue_documents', { containers: [] }).ok).toBe(false);
  });
});
