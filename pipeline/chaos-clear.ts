/** Undoing injected faults (`clear()`), from whichever process injected them, and listing the active ones. */
import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import path from 'node:path';
import { PROJECT_ROOT } from '../workers/project';
import { chaosKey, type ChaosContext, type ChaosRecord, type ChaosResult } from './chaos-context';
import { COMPARE_AND_DELETE } from './lua';
import { defineScript } from '../core/redis-script';
import { processRunsCommand, readRegistration, type WorkerRegistration } from './registry';
import { answers200 } from './runner-support';
import { errorMessage } from '../core/errors';

export function clearFaults(ctx: ChaosContext) {
  const { opts, pool, redis, keys, needDocker, waitFor } = ctx;
  const logDir = opts.logDir ?? path.join(PROJECT_ROOT, '.data', 'logs', 'pipeline');
  const restartTimeoutMs = opts.restartTimeoutMs ?? 30_000;
  const compareAndDelete = defineScript(redis, 'chaosCompareAndDelete', COMPARE_AND_DELETE);

  async function restartWorker(reg: WorkerRegistration): Promise<Record<string, unknown>> {
    if (reg.kind === 'container') {
      const docker = needDocker(`restarting container worker ${reg.worker}`);
      const name = reg.container ?? reg.worker;
      const c = docker.getContainer(name);
      if (!(await c.inspect()).State.Running) await c.start();
      const healthy = await waitFor(() => answers200(reg.healthUrl), restartTimeoutMs);
      return { worker: reg.worker, container: name, restarted: true, healthy };
    }
    const now = await readRegistration(redis, keys, reg.worker);
    if (now && now.pid !== reg.pid && processRunsCommand(now.pid, now.command?.argv)) {
      return { worker: reg.worker, restarted: false, reason: `already running as pid ${now.pid}` };
    }
    if (!reg.command) throw new Error(`worker ${reg.worker} recorded no command line to restart it with`);
    const [exe, ...args] = reg.command.argv as [string, ...string[]];
    mkdirSync(logDir, { recursive: true });
    const out = openSync(path.join(logDir, `${reg.worker}.log`), 'a');
    const env: NodeJS.ProcessEnv = { ...(opts.spawnEnv ?? process.env), ...reg.command.env };
    delete env.PIPELINE_CONTAINER;
    // Detached and unreferenced: it must outlive a `selfheal chaos clear` command.
    const child = spawn(exe, args, { cwd: reg.command.cwd, env, detached: true, stdio: ['ignore', out, out] });
    closeSync(out);
    child.unref();
    const pid = child.pid;
    const healthy = await waitFor(async () => {
      const r = await readRegistration(redis, keys, reg.worker);
      return r !== undefined && r.pid === pid && (await answers200(r.healthUrl));
    }, restartTimeoutMs);
    return { worker: reg.worker, restarted: true, pid, healthy };
  }

  async function undo(r: ChaosRecord): Promise<Record<string, unknown>> {
    switch (r.fault) {
      case 'kill-worker':
        return { fault: r.fault, ...(await restartWorker(r.registration)) };
      case 'hang-worker':
      case 'error-rate':
      case 'slow':
        // The fault hash is deleted as a whole before any undo.
        return {
          fault: r.fault,
          ...('worker' in r && r.worker ? { worker: r.worker } : {}),
          ...('stage' in r ? { stage: r.stage } : {}),
        };
      case 'stale-lock': {
        let removed = 0;
        for (const l of r.locks) removed += (await compareAndDelete([l.key], [l.value])) as number;
        return { fault: r.fault, owner: r.owner, removed };
      }
      case 'stuck-documents': {
        // Only the documents still stuck as we left them: selfheal may have requeued some already.
        const { rows } = await pool.query<{ id: number }>(
          `UPDATE documents SET status = 'queued', worker_id = NULL, updated_at = now()
            WHERE id = ANY($1::bigint[]) AND stage = $2 AND status = 'processing' AND worker_id = $3 RETURNING id`,
          [r.ids, r.stage, r.owner],
        );
        const requeued = rows.map((x) => x.id).sort((a, b) => a - b);
        const m = redis.multi();
        for (const id of r.ids) m.lrem(keys.processing(r.stage, r.owner), 0, id);
        if (requeued.length > 0) m.lpush(keys.queue(r.stage), ...requeued);
        await m.exec();
        return { fault: r.fault, owner: r.owner, requeued };
      }
      case 'redis-flush':
        // Nothing to restore: that is the point. The pipeline's rows are intact; the lists are what was lost.
        return { fault: r.fault, deleted: r.deleted };
      case 'duplicate-entries': {
        let removed = 0;
        for (const id of r.duplicates) {
          if ((await redis.lpos(keys.queue(r.stage), id, 'COUNT', 0)).length > 1) {
            removed += await redis.lrem(keys.queue(r.stage), 1, id);
          }
        }
        for (const id of r.orphans) removed += await redis.lrem(keys.queue(r.stage), 0, id);
        return { fault: r.fault, stage: r.stage, removed };
      }
      case 'poison': {
        const { rows } = await pool.query<{ id: number }>(
          `UPDATE documents SET status = 'dead', error = 'poison document removed by chaos clear', updated_at = now()
            WHERE id = ANY($1::bigint[]) AND status NOT IN ('completed', 'dead') RETURNING id`,
          [r.ids],
        );
        return { fault: r.fault, markedDead: rows.map((x) => x.id).sort((a, b) => a - b) };
      }
      case 'llm-down': {
        if (r.via === 'container') {
          const c = needDocker(`starting LLM container ${r.container}`).getContainer(r.container);
          if (!(await c.inspect()).State.Running) await c.start();
          return { fault: r.fault, container: r.container, started: true };
        }
        if (processRunsCommand(r.pid, r.argv)) process.kill(r.pid, 'SIGCONT');
        return { fault: r.fault, pid: r.pid, signal: 'SIGCONT' };
      }
    }
  }

  async function clear(): Promise<ChaosResult> {
    // Take the records atomically, so two concurrent clears never undo one fault twice.
    const res = await redis.multi().lrange(chaosKey(keys), 0, -1).del(chaosKey(keys)).exec();
    const raws = (res?.[0]?.[1] as string[] | undefined) ?? [];
    const faults = await redis.hgetall(keys.pipelineFaults());
    await redis.del(keys.pipelineFaults());
    const undone: Record<string, unknown>[] = [];
    const failed: { record: ChaosRecord; error: string }[] = [];
    for (const raw of raws.reverse()) {
      let r: ChaosRecord;
      try {
        r = JSON.parse(raw) as ChaosRecord;
      } catch {
        continue;
      }
      try {
        undone.push(await undo(r));
      } catch (err) {
        failed.push({ record: r, error: errorMessage(err) });
      }
    }
    // Keep what could not be undone, so a later clear can try again.
    if (failed.length > 0) await redis.rpush(chaosKey(keys), ...failed.map((f) => JSON.stringify(f.record)));
    return {
      fault: 'clear',
      faultsCleared: Object.keys(faults).sort(),
      undone,
      failed: failed.map((f) => ({ fault: f.record.fault, error: f.error })),
    };
  }

  async function active() {
    const [faults, raws] = await Promise.all([
      redis.hgetall(keys.pipelineFaults()),
      redis.lrange(chaosKey(keys), 0, -1),
    ]);
    return { faults, records: raws.map((r) => JSON.parse(r) as ChaosRecord) };
  }

  return { clear, active };
}
