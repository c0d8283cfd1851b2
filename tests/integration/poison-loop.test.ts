/**
 * A poison document that kills the only worker of its stage, against the real pipeline (worker containers), Postgres,
 * Redis, Docker and Temporal: the worker dies on it, is restarted, takes it again (its own processing list) and dies
 * again; the restart that follows quarantines that document first, so the worker comes back for good and the other
 * documents flow. POISON_CRASHES is out of reach here, so it is the restart's own quarantine-first that ends the loop.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateDocuments } from '../../pipeline/generator';
import { waitFor } from '../helpers/env';
import { waitForDocuments } from '../helpers/pipeline';
import { startStack, type Stack } from '../helpers/stack';

describe('a poison document kills the only worker of its stage', () => {
  let s: Stack;

  beforeAll(async () => {
    s = await startStack({
      ollama: { replies: [{ kind: 'status', status: 500 }] },
      pipeline: {
        work: { minMs: 2, maxMs: 6 },
        workers: [
          { stage: 'extract', kind: 'container', count: 1 },
          { stage: 'evaluate', kind: 'container', count: 1 },
        ],
      },
      env: ({ runner }) => ({
        HEALTH_TARGETS: runner!.healthTargets(),
        AUTO_FIX_ENABLED: 'true',
        VERIFY_DELAY: '3',
        RESTART_COOLDOWN: '2',
        MAX_ACTIONS_PER_HOUR: '100',
        CONTAINER_ALLOWLIST: 'pipeline-*',
        POISON_CRASHES: '100',
        QUEUE_STALL_THRESHOLD: '3600',
      }),
    });
  }, 180_000);

  afterAll(async () => {
    await s?.stop();
  });

  it('the restart after its second death quarantines it first; the worker stays up and the rest flows', async () => {
    const extract = s.workers.find((w) => w.stage === 'extract')!;
    const r = s.selfheal.cli(['chaos', 'poison', '1', 'extract', '--json']);
    expect(r.status, r.stderr).toBe(0);
    const [poisonId] = (JSON.parse(r.stdout) as { documents: number[] }).documents;

    // The loop ends with the document dead, quarantined by a restart of the worker it kept killing.
    const row = await waitFor(
      async () => {
        const { rows } = await s.t.pool.query<{ status: string; error: string | null }>(
          'SELECT status, error FROM documents WHERE id = $1',
          [poisonId],
        );
        return rows[0]?.status === 'dead' ? rows[0] : undefined;
      },
      { timeoutMs: 120_000, what: `document ${poisonId} quarantined` },
    ).catch(async (err: unknown) => {
      const log = await s.t.pool.query(`SELECT step, action, target, outcome, params FROM healing_log ORDER BY id`);
      const doc = await s.t.pool.query('SELECT id, status, worker_id, attempts, error FROM documents WHERE id = $1', [
        poisonId,
      ]);
      console.log(JSON.stringify({ log: log.rows, doc: doc.rows }, null, 1).slice(0, 20_000));
      throw err;
    });
    expect(row.error).toMatch(new RegExp(`quarantined by selfheal: ${extract.container} died holding it`));
    // The restart's own row is written after the restart itself, right after the quarantine.
    const restarts = await waitFor(
      async () => {
        const { rows } = await s.t.pool.query<{ result: Record<string, unknown> }>(
          `SELECT params->'result' AS result FROM healing_log
            WHERE step = 'executed' AND action = 'restart_worker' AND target = $1 ORDER BY id`,
          [extract.container],
        );
        return rows.at(-1)?.result.quarantineRequested ? rows : undefined;
      },
      { timeoutMs: 60_000, what: 'the restart that quarantined it' },
    );
    expect(restarts.length).toBeGreaterThanOrEqual(2);
    expect(restarts.at(-1)!.result).toMatchObject({ quarantinedFirst: [poisonId], quarantineRequested: [poisonId] });
    // Every restart before it was a plain one: the first death alone named no suspect.
    expect(restarts[0]!.result.quarantineRequested).toBeUndefined();

    // Up for good: running, and the documents after it are processed by the stage's only worker.
    await waitFor(async () => (await s.docker.getContainer(extract.container!).inspect()).State.Running, {
      what: `${extract.container} running`,
    });
    const docs = await generateDocuments({ pool: s.t.pool, redis: s.t.redis, keys: s.t.keys, count: 20 });
    await waitForDocuments(s.t, docs, { timeoutMs: 60_000 });
    const inspected = await s.docker.getContainer(extract.container!).inspect();
    expect(inspected.State.Running).toBe(true);
    const { rows: escalated } = await s.t.pool.query(
      `SELECT 1 FROM healing_log WHERE step = 'escalated' AND target = $1`,
      [extract.container],
    );
    expect(escalated).toEqual([]);
  }, 240_000);
});
