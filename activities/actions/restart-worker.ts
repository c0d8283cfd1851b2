import { ApplicationFailure, Context } from '@temporalio/activity';
import type Docker from 'dockerode';
import { scopeLabel, stopTimeoutFromLabels } from '../../core/container-scope';
import { containerAllowed, containerDenied } from '../../core/safety';
import { isHealthyStatus } from '../../core/snapshot';
import { healthDecides, type Plan } from '../../core/plan';
import type { ActionContext } from './context';
import { stopStillHolds } from '../docker';
import { createNotice } from './notice';
import { quarantineRows } from './quarantine-document';
import { record } from './executed-row';
import { checkInput, invalid } from './helpers';
import { ActionErrorType, type ActionInput, type ActionResult } from './types';

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** HTTP status of a GET, or 0 when nothing answered within the timeout. */
export async function httpStatus(url: string, timeoutMs = 2_000): Promise<number> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    await res.body?.cancel();
    return res.status;
  } catch {
    return 0;
  }
}

export function createRestartWorker(ctx: ActionContext) {
  const { pool, documentsPool, docker, config, priorResult, lastAttempt, recordAttempt, stopRecord } = ctx;
  const notice = createNotice(ctx);
  const healthUrls = new Map(config.healthTargets.map((t) => [t.container, t.url]));
  const restartHealthTimeoutMs = config.restartHealthTimeoutMs ?? 30_000;

  /**
   * Healthy: running, not reported unhealthy by its Docker HEALTHCHECK (or, with `untilHealthy`, reported healthy:
   * after a restart `starting` is not yet back), and its HEALTH_TARGETS URL, if any, answering 2xx.
   */
  async function isHealthy(
    url: string | undefined,
    state: Docker.ContainerInspectInfo['State'],
    untilHealthy = false,
  ): Promise<{ healthy: boolean; status?: number; dockerHealth?: string }> {
    const dockerHealth = state.Health?.Status;
    const declared = dockerHealth !== undefined && dockerHealth !== 'none';
    const dockerOk = !declared || (untilHealthy ? dockerHealth === 'healthy' : dockerHealth !== 'unhealthy');
    const health = declared ? { dockerHealth } : {};
    if (!state.Running || !dockerOk) return { healthy: false, ...health };
    if (!url) return { healthy: true, ...health };
    const status = await httpStatus(url);
    return { healthy: isHealthyStatus(status), status, ...health };
  }

  /**
   * Restarts a container through the Docker engine (inspect, then restart: no other Docker call), unless the
   * anomaly is about its health (unhealthy container, dead owner) and it is running and its health URL answers 2xx. Refused, without any Docker call, when the allow/deny lists forbid it.
   *
   * Before the restart call an `attempted` row records the container's StartedAt; the executed row is written
   * right after the call returns. A crash between the two (the worker killed mid-restart) leaves an attempt and no
   * executed row: the retry sees StartedAt changed since that attempt, so the container was restarted, and records
   * that restart as done (naming the attempt that did it) instead of restarting a second time.
   */
  async function restartWorker(input: ActionInput): Promise<ActionResult> {
    const plan = checkInput(input, 'restart_worker');
    const name = plan.params.container;
    if (typeof name !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(name)) {
      invalid(`restart_worker: params.container must be a container name, got ${JSON.stringify(name)}`);
    }
    // The policy checked this before; checked again here, where the restart happens. The deny list wins, without
    // any Docker call; a scope label is read from the inspection (a read, no change).
    const denied = containerDenied(name, config.containerDenylist);
    if (denied) return { action: 'restart_worker', outcome: 'refused', details: { container: name, reason: denied } };
    const prior = await priorResult('restart_worker', input.idempotencyKey);
    if (prior) return prior;

    const container = docker.getContainer(name);
    let inspected: Docker.ContainerInspectInfo;
    try {
      inspected = await container.inspect();
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) {
        throw ApplicationFailure.nonRetryable(`container ${name} does not exist`, ActionErrorType.container_not_found);
      }
      throw err;
    }
    // Docker also resolves an id or an id prefix: the container found must be the one named, or a name that passed
    // the lists could reach another container (a hex name that is a prefix of the database's id).
    const resolved = (inspected.Name ?? '').replace(/^\//, '');
    if (resolved !== name) {
      return {
        action: 'restart_worker',
        outcome: 'refused',
        details: {
          container: name,
          reason: `${name} resolves to the container ${resolved || inspected.Id}, not one of that name`,
        },
      };
    }
    const labels = inspected.Config?.Labels ?? {};
    const permitted = containerAllowed(
      name,
      config.containerAllowlist,
      config.containerDenylist,
      scopeLabel(labels, config.autohealLabel ?? true),
    );
    if (!permitted.ok) {
      return { action: 'restart_worker', outcome: 'refused', details: { container: name, reason: permitted.why } };
    }
    const url = healthUrls.get(name);
    const attempted = await lastAttempt(input.idempotencyKey);
    if (attempted && attempted.container === name && attempted.startedAtBefore !== inspected.State.StartedAt) {
      const done: ActionResult = {
        action: 'restart_worker',
        outcome: 'done',
        details: {
          container: name,
          allowed: permitted.why,
          restartedByAttempt: attempted.attempt,
          startedAtBefore: attempted.startedAtBefore,
          startedAt: inspected.State.StartedAt,
          note: 'an earlier attempt restarted the container and stopped before recording it; not restarted again',
        },
      };
      await record(pool, input, done);
      return told(plan, await waitForHealth(name, inspected.Id, url, done, performance.now()));
    }
    // Stopped on purpose since the healing began (it may have waited an hour for a permit, an approval or a backoff):
    // an operator's stop is not undone.
    const stop = inspected.State.Running ? undefined : await stopRecord(name);
    if (stopStillHolds(stop, Date.parse(inspected.State.StartedAt))) {
      const result: ActionResult = {
        action: 'restart_worker',
        outcome: 'nothing_to_do',
        details: { container: name, state: inspected.State.Status, stoppedOnPurpose: stop },
      };
      await record(pool, input, result);
      return result;
    }
    const before = await isHealthy(url, inspected.State);
    // Health is the problem only for an unhealthy container or a dead lock owner. A worker that fails, crawls or
    // hangs behind a 2xx (`params.hung`) is restarted while "healthy": the workflow re-ran its detector right before
    // this call.
    if (before.healthy && healthDecides(plan)) {
      const result: ActionResult = {
        action: 'restart_worker',
        outcome: 'nothing_to_do',
        details: {
          container: name,
          state: inspected.State.Status,
          ...(before.dockerHealth ? { dockerHealth: before.dockerHealth } : {}),
          ...(url
            ? { healthStatus: before.status }
            : before.dockerHealth
              ? {}
              : { health: 'no health URL or HEALTHCHECK; running' }),
        },
      };
      await record(pool, input, result);
      return result;
    }

    // A crash loop on a poison document: the document goes first, so the restarted worker does not take it again.
    const poison = (plan.params.quarantineFirst ?? []).filter((id) => Number.isSafeInteger(id) && id > 0);
    const quarantinedFirst =
      poison.length > 0
        ? await quarantineRows(
            documentsPool,
            poison.slice(0, config.requeueCap),
            `quarantined by selfheal: ${name} died holding it, as a worker had before (crash loop)`,
          )
        : undefined;
    // The container's stop-timeout label, else RESTART_STOP_TIMEOUT.
    const stopTimeout = stopTimeoutFromLabels(labels);
    const stopSeconds = stopTimeout.seconds ?? config.restartStopTimeoutSeconds;
    await recordAttempt(input, { container: name, startedAtBefore: inspected.State.StartedAt });
    const t0 = performance.now();
    // The stop timeout may be long: keep heartbeating through the call.
    const beat = () => Context.current().heartbeat({ container: name, waiting: 'restart' });
    beat();
    const beating = setInterval(beat, 5_000);
    try {
      // By id from here on: the name was checked against the container it names, and must not reach another one.
      await docker.getContainer(inspected.Id).restart({ t: stopSeconds });
    } finally {
      clearInterval(beating);
    }
    const restartMs = Math.round(performance.now() - t0);
    const done: ActionResult = {
      action: 'restart_worker',
      outcome: 'done',
      details: {
        container: name,
        allowed: permitted.why,
        stateBefore: inspected.State.Status,
        ...(inspected.State.Running
          ? {}
          : { exitCodeBefore: inspected.State.ExitCode, oomKilled: inspected.State.OOMKilled }),
        ...(before.dockerHealth ? { dockerHealthBefore: before.dockerHealth } : {}),
        healthStatusBefore: before.status ?? null,
        stopTimeoutSeconds: stopSeconds,
        ...(quarantinedFirst ? { quarantinedFirst, quarantineRequested: poison } : {}),
        ...(stopTimeout.label ? { stopTimeoutLabel: stopTimeout.label } : {}),
        ...(stopTimeout.invalid ? { stopTimeoutLabelInvalid: stopTimeout.invalid } : {}),
        ...(stopTimeout.clamped ? { stopTimeoutLabelClamped: stopTimeout.clamped } : {}),
        restartMs,
      },
    };
    await record(pool, input, done);
    return told(plan, await waitForHealth(name, inspected.Id, url, done, t0));
  }

  /**
   * Every restart is told on the escalation webhook (event `restarted`), as autoheal's webhook does; a notice that
   * cannot be delivered is noted and changes nothing else. A retry of the activity after this point tells again.
   */
  async function told(plan: Plan, result: ActionResult): Promise<ActionResult> {
    const delivery = await notice(plan, { restarted: { outcome: result.outcome, details: result.details } });
    return { ...result, details: { ...result.details, notice: delivery.webhook } };
  }

  /**
   * Back to health after a restart, bounded: running, its HEALTHCHECK (if any) reporting healthy, its health URL (if
   * any) answering 2xx. With neither, running is all that can be known.
   */
  async function waitForHealth(
    name: string,
    id: string,
    url: string | undefined,
    done: ActionResult,
    t0: number,
  ): Promise<ActionResult> {
    const container = docker.getContainer(id);
    const deadline = Date.now() + restartHealthTimeoutMs;
    let last: { healthy: boolean; status?: number; dockerHealth?: string } = { healthy: false };
    for (;;) {
      Context.current().heartbeat({ container: name, waiting: 'health' });
      last = await isHealthy(url, (await container.inspect()).State, true);
      if (last.healthy || Date.now() > deadline) break;
      await sleep(200);
    }
    const healthyAfterMs = Math.round(performance.now() - t0);
    return {
      action: 'restart_worker',
      outcome: last.healthy ? 'done' : 'partial',
      details: {
        ...done.details,
        healthy: last.healthy,
        ...(last.healthy
          ? { healthyAfterMs }
          : {
              healthTimeoutMs: restartHealthTimeoutMs,
              lastHealthStatus: last.status ?? null,
              ...(last.dockerHealth ? { lastDockerHealth: last.dockerHealth } : {}),
            }),
      },
    };
  }

  return { restartWorker };
}
