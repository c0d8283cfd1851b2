/** Container and service detectors: failing health checks or stopped containers, and the LLM server. */
import { anomaly, EVIDENCE_ID_CAP, type Detector } from './common';
import { deathsByDocument } from './documents';
import { hungWorkers } from './hung';
import type { ContainerState } from '../snapshot';
import type { Anomaly } from '../types';

export const detectUnhealthyContainer: Detector = (snapshot, history, t, now) => {
  const out: Anomaly[] = [];
  // What Docker says first: a dead or Docker-unhealthy container is one anomaly, from Docker's facts, which fire at
  // once; a failing health URL of a container Docker sees working counts its failures.
  const seen = new Set<string>();
  // Deaths per document over the history, read once per cycle and only when some container is dead.
  let deaths: ReturnType<typeof deathsByDocument> | undefined;
  const documentDeaths = () => (deaths ??= deathsByDocument([...history.map((r) => r.snapshot), snapshot]));
  for (const c of snapshot.containers) {
    if (c.running) {
      // Docker's HEALTHCHECK: `starting` is not unhealthy, and a container without one keeps the health URL below.
      if (c.health !== 'unhealthy') continue;
      seen.add(c.name);
      const last = c.healthLog?.at(-1);
      out.push(
        anomaly(
          'unhealthy_container',
          c.name,
          'critical',
          `${c.name}: Docker reports it unhealthy${last ? ` (last check: exit ${last.exitCode}${last.output ? `, ${JSON.stringify(last.output.slice(0, 80))}` : ''})` : ''}`,
          {
            state: c.state,
            health: c.health,
            healthLog: c.healthLog ?? [],
            restartCount: c.restartCount,
            source: DOCKER_SOURCE,
          },
          now,
        ),
      );
      continue;
    }
    const ended = howItEnded(c);
    // Decided by Docker's facts either way: a container stopped on purpose is not restarted for its health URL.
    seen.add(c.name);
    if (ended?.leftAlone) continue;
    // A document it held when it died this time (seen now or in the history since: it may have been requeued), on
    // which workers died at least twice: a poison document's crash loop. Only this death's: a document quarantined
    // after an earlier death must not exempt every later restart from the breaker.
    const thisDeath = `${c.name}@${c.startedAt ?? 'process'}`;
    const poisonSuspects = [...documentDeaths()]
      .filter(([, died]) => died.size >= 2 && died.has(thisDeath))
      .map(([id]) => id)
      .sort((a, b) => a - b)
      .slice(0, EVIDENCE_ID_CAP);
    out.push(
      anomaly(
        'unhealthy_container',
        c.name,
        'critical',
        `${c.name}: container is ${c.state}${ended ? ` (${ended.how})` : ''}`,
        {
          state: c.state,
          restartCount: c.restartCount,
          source: DOCKER_SOURCE,
          ...(poisonSuspects.length > 0 ? { poisonSuspects } : {}),
          ...(c.exitCode !== undefined
            ? { exitCode: c.exitCode, oomKilled: c.oomKilled ?? false, ended: ended?.how }
            : {}),
        },
        now,
      ),
    );
  }
  for (const result of snapshot.health) {
    if (result.ok || seen.has(result.container)) continue;
    // Consecutive failures: this cycle and the most recent ones before it.
    let failures = 1;
    for (let i = history.length - 1; i >= 0 && failures < t.healthFailuresBeforeUnhealthy; i--) {
      const past = history[i]!.snapshot;
      if (!past.sources.health.ok) break;
      const r = past.health.find((h) => h.container === result.container);
      if (!r || r.ok) break;
      failures++;
    }
    if (failures < t.healthFailuresBeforeUnhealthy) continue;
    out.push(
      anomaly(
        'unhealthy_container',
        result.container,
        'critical',
        `${result.container}: health check failed ${failures} times in a row (${result.status ? `HTTP ${result.status}` : (result.error ?? 'no answer')})`,
        { url: result.url, status: result.status ?? null, error: result.error ?? null, consecutiveFailures: failures },
        now,
      ),
    );
  }
  // Working as far as Docker and its health URL can tell, and taking nothing from a backlog its peers work through.
  out.push(...hungWorkers(snapshot, history, t, now, seen));
  return out;
};

/**
 * `evidence.source` of an anomaly Docker itself reports (a container that died, or that its HEALTHCHECK calls
 * unhealthy): a fact, not a noisy metric, so noise control fires it at its first sighting (core/detectors/cycle.ts).
 */
export const DOCKER_SOURCE = 'docker';

/** Exit codes of a process ended by SIGINT (130) or SIGTERM (143): what `docker stop` and `docker kill -s TERM` send. */
const STOP_EXIT_CODES = [130, 143];

/**
 * How a container that is not running ended, in words for the audit, and whether it is left alone: it exited 0
 * (finished, or shut down gracefully when asked) or was ended by SIGTERM or SIGINT (stopped on purpose), and was not
 * killed for memory. Anything else (another exit code, SIGKILL, OOM) is a death, healed. Undefined when Docker did not
 * say (records from before exit codes were kept).
 */
export function howItEnded(
  c: Pick<ContainerState, 'exitCode' | 'oomKilled' | 'stopped'>,
): { leftAlone: boolean; how: string } | undefined {
  if (c.oomKilled) return { leftAlone: false, how: 'killed by the kernel, out of memory' };
  // Docker's event stream saw it stopped on purpose: whatever the exit code (a process that ignores SIGTERM is
  // killed when the stop timeout runs out, 137).
  if (c.stopped) return { leftAlone: true, how: `stopped on purpose: ${c.stopped.how}` };
  if (c.exitCode === undefined) return undefined;
  if (c.exitCode === 0) return { leftAlone: true, how: 'exited 0: finished or stopped' };
  const signal = c.exitCode > 128 && c.exitCode < 160 ? c.exitCode - 128 : undefined;
  if (STOP_EXIT_CODES.includes(c.exitCode)) {
    return { leftAlone: true, how: `stopped on purpose: exit code ${c.exitCode}, signal ${signal}` };
  }
  return {
    leftAlone: false,
    how: `died without a stop: exit code ${c.exitCode}${signal ? `, signal ${signal}` : ''}`,
  };
}

export const detectLlmUnavailable: Detector = (snapshot, _history, _t, now) => {
  const o = snapshot.ollama;
  if (o.reachable && o.modelPresent) return [];
  return [
    anomaly(
      'llm_unavailable',
      'ollama',
      'warning',
      o.reachable
        ? 'Ollama answers but the model is not available'
        : `Ollama does not answer${o.error ? `: ${o.error}` : ''}`,
      { reachable: o.reachable, modelPresent: o.modelPresent, error: o.error ?? null },
      now,
    ),
  ];
};
