/**
 * Docker activities. They run only on the selfheal-actions task queue: the actions worker is the only process
 * with a Docker client. Read access is limited to listing and inspecting containers.
 */
import type Docker from 'dockerode';
import type { Redis } from 'ioredis';
import type { StoppedOnPurpose } from '../core/docker-events';
import type { Keys } from '../core/keys';
import {
  composeService,
  dockerHealth,
  healthLogEvidence,
  scopeLabel,
  type DockerHealth,
} from '../core/container-scope';
import type { ContainerState, ContainersView } from '../core/snapshot';
import { globMatch } from '../core/safety';
import { errorFirstLine } from '../core/errors';
import { defineScript } from '../core/redis-script';
import { StopRecords } from './docker-stops';

/** Label that marks the containers of the monitored pipeline. */
export const PIPELINE_LABEL = 'selfheal.pipeline';
/** Label naming the stage a pipeline container serves. */
export const STAGE_LABEL = 'selfheal.stage';

/** Docker's view of the containers (core/snapshot.ts: `withContainers` puts it in a snapshot). */
export type InspectResult = ContainersView;

/** Which containers are watched besides the pipeline's and the named ones (CONTAINER_ALLOWLIST, AUTOHEAL_LABEL). */
export interface WatchScope {
  allowlist: string[];
  autohealLabel: boolean;
}

const nameOf = (c: Docker.ContainerInfo) => (c.Names[0] ?? '').replace(/^\//, '');
/** `docker ps` shows a health status in the container's status line: "Up 2 minutes (unhealthy)". */
const listedUnhealthy = (c: Docker.ContainerInfo) => /\(unhealthy\)/.test(c.Status ?? '');

export interface DockerActivityDeps {
  docker: Docker;
  scope: WatchScope;
  /**
   * Where the event stream records the containers stopped on purpose (workers/docker-events.ts), and where the
   * inspection records the restarts made by Docker's restart policy. `records`: the stops as the process's event
   * watcher keeps them (Redis and its memory); without it, Redis's alone.
   */
  stops?: { redis: Redis; keys: Keys; records?: StopRecords };
}

/** How long the restarts made by Docker's restart policy are kept: longer than any circuit breaker window. */
const POLICY_RESTARTS_KEPT_MS = 24 * 3600_000;

/**
 * One container's `RestartCount` as an inspection saw it, compared and set in one step (inspections run at once in
 * the cycle, in verifications and on several actions workers). KEYS: the counts hash, the container's sorted set.
 * ARGV: name, container id, count, start time (epoch ms), ms kept. The count is stored as `<id>:<count>`: a container
 * recreated under the same name, or whose count went down (a `docker restart` resets it), only sets it. Each restart
 * added is a member `<id>:<start>:<n>` scored by the container's last start: two inspections of the same state add
 * the same members, once; restarts that happened while nothing inspected are dated by their last start, not by now.
 */
const RECORD_POLICY_RESTARTS = `
local prev = redis.call('HGET', KEYS[1], ARGV[1])
local id, n, started, keep = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local added = 0
if prev then
  local pid, pn = string.match(prev, '^(.*):(%d+)$')
  pn = tonumber(pn)
  if pid == id and pn ~= nil and n > pn then
    for i = pn + 1, n do
      added = added + redis.call('ZADD', KEYS[2], started, id .. ':' .. ARGV[4] .. ':' .. i)
    end
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', started - keep)
    redis.call('PEXPIRE', KEYS[2], keep)
  end
end
redis.call('HSET', KEYS[1], ARGV[1], id .. ':' .. n)
redis.call('PEXPIRE', KEYS[1], keep)
return added
`;

/**
 * Records the restarts Docker's restart policy made since the last inspection: a container whose `RestartCount` grew
 * restarted that many times. A container seen for the first time, recreated, or whose count went down only sets the
 * count. Only containers whose stored count differs are sent to Redis. Best effort: Redis down loses nothing else.
 *
 * Docker resets `RestartCount` on a `docker restart` (selfheal's restarts), so those are never counted twice; policy
 * restarts that bring the count back to its stored value within one cycle after such a reset are missed.
 */
export async function recordPolicyRestarts(
  redis: Redis,
  keys: Keys,
  containers: Pick<ContainerState, 'name' | 'id' | 'restartCount' | 'startedAt'>[],
): Promise<number> {
  const known = await redis.hgetall(keys.dockerRestartCounts());
  const record = defineScript(redis, 'selfhealRecordPolicyRestarts', RECORD_POLICY_RESTARTS);
  let added = 0;
  for (const c of containers) {
    if (!c.id || known[c.name] === `${c.id}:${c.restartCount}`) continue;
    added += Number(
      await record(
        [keys.dockerRestartCounts(), keys.dockerRestarts(c.name)],
        [c.name, c.id, c.restartCount, c.startedAt ?? 0, POLICY_RESTARTS_KEPT_MS],
      ),
    );
  }
  return added;
}

/** epoch ms of the restarts Docker's restart policy made of `container` since `since`, oldest first. */
export async function policyRestartsSince(
  redis: Redis,
  keys: Keys,
  container: string,
  since: number,
): Promise<number[]> {
  const members = await redis.zrangebyscore(keys.dockerRestarts(container), `(${since}`, '+inf', 'WITHSCORES');
  const out: number[] = [];
  for (let i = 1; i < members.length; i += 2) out.push(Number(members[i]));
  return out;
}

/**
 * A stop record holds only for the incarnation it stopped: made at or after the container's last start. An older one
 * (its `start` event missed while the stream was down) says nothing about how the container ended this time.
 */
export function stopStillHolds(stop: StoppedOnPurpose | undefined, startedAt: number): stop is StoppedOnPurpose {
  return stop !== undefined && (!Number.isFinite(startedAt) || stop.at >= startedAt);
}

export function createDockerActivities({ docker, scope, stops }: DockerActivityDeps) {
  const records = stops ? (stops.records ?? new StopRecords(stops.redis, stops.keys)) : undefined;

  /** Whether a listed container is watched: pipeline, in scope by name or label, or reported unhealthy. */
  function watched(c: Docker.ContainerInfo): boolean {
    const labels = c.Labels ?? {};
    return (
      labels[PIPELINE_LABEL] === 'true' ||
      scopeLabel(labels, scope.autohealLabel) !== undefined ||
      scope.allowlist.some((p) => globMatch(p, nameOf(c))) ||
      // Out of scope, it is still seen, so that it is escalated (never touched).
      listedUnhealthy(c)
    );
  }

  /** Undefined when the container is gone since it was listed. */
  async function inspectOne(
    name: string,
    info: Docker.ContainerInfo,
    stopped: Map<string, StoppedOnPurpose>,
  ): Promise<ContainerState | undefined> {
    let inspected: Docker.ContainerInspectInfo;
    try {
      inspected = await docker.getContainer(info.Id).inspect();
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) return undefined;
      throw err;
    }
    const state = inspected.State;
    const started = Date.parse(state.StartedAt);
    const labels = inspected.Config?.Labels ?? info.Labels ?? {};
    const health: DockerHealth | undefined = dockerHealth(state.Health?.Status);
    const label = scopeLabel(labels, scope.autohealLabel);
    const service = composeService(labels);
    return {
      name,
      id: inspected.Id,
      state: state.Status,
      running: state.Running,
      restartCount: inspected.RestartCount,
      startedAt: Number.isFinite(started) && started > 0 ? started : undefined,
      stage: labels[STAGE_LABEL],
      ...(health ? { health } : {}),
      ...(health === 'unhealthy' ? { healthLog: healthLogEvidence(state.Health?.Log) } : {}),
      ...(label ? { scopeLabel: label } : {}),
      ...(service ? { service } : {}),
      ...(state.Running ? {} : { exitCode: state.ExitCode, oomKilled: state.OOMKilled }),
      ...(!state.Running && stopStillHolds(stopped.get(name), started) ? { stopped: stopped.get(name) } : {}),
    };
  }

  return {
    /**
     * State of the watched containers: those labelled `selfheal.pipeline=true`, in scope for restart (a name on the
     * allow list, `selfheal.enable=true`, `autoheal=true`), reported unhealthy by Docker, or named (the containers
     * of HEALTH_TARGETS); every one carrying each label of `labels` (one pipeline among several on a host). Never
     * throws for an unreachable engine: the snapshot marks Docker degraded.
     */
    async inspectContainers({ names, labels = [] }: { names: string[]; labels?: string[] }): Promise<InspectResult> {
      try {
        const listed = await docker.listContainers({
          all: true,
          ...(labels.length > 0 ? { filters: { label: labels } } : {}),
        });
        const wanted = new Set(names);
        const byName = new Map<string, Docker.ContainerInfo>();
        for (const c of listed) if (watched(c) || wanted.has(nameOf(c))) byName.set(nameOf(c), c);
        const missing = [...wanted].filter((n) => !byName.has(n));
        if (missing.length > 0) {
          const extra = await docker.listContainers({ all: true, filters: { name: missing.map((n) => `^/${n}$`) } });
          for (const c of extra) byName.set(nameOf(c), c);
        }
        const stopped = records ? await records.read() : new Map<string, StoppedOnPurpose>();
        const containers = (
          await Promise.all([...byName.entries()].map(([name, info]) => inspectOne(name, info, stopped)))
        ).filter((c) => c !== undefined);
        if (stops) await recordPolicyRestarts(stops.redis, stops.keys, containers).catch(() => undefined);
        return { ok: true, containers: containers.sort((a, b) => a.name.localeCompare(b.name)) };
      } catch (err) {
        return { ok: false, error: errorFirstLine(err), containers: [] };
      }
    },
  };
}
