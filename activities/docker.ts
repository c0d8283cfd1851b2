/**
 * Docker activities. They run only on the selfheal-actions task queue: the actions worker is the only process
 * with a Docker client. Read access is limited to inspecting the pipeline's containers.
 */
import type Docker from 'dockerode';
import type { ContainerState, ContainersView } from '../core/snapshot';
import { errorMessage } from '../core/errors';

/** Label that marks the containers of the monitored pipeline. */
export const PIPELINE_LABEL = 'selfheal.pipeline';
/** Label naming the stage a pipeline container serves. */
export const STAGE_LABEL = 'selfheal.stage';

/** Docker's view of the containers (core/snapshot.ts: `withContainers` puts it in a snapshot). */
export type InspectResult = ContainersView;

export function createDockerActivities({ docker }: { docker: Docker }) {
  return {
    /**
     * State of the pipeline's containers: those labelled `selfheal.pipeline=true` (and every label in `labels`),
     * plus the named ones (the containers of HEALTH_TARGETS). Never throws for an unreachable engine: the snapshot marks Docker degraded.
     */
    async inspectContainers({ names, labels = [] }: { names: string[]; labels?: string[] }): Promise<InspectResult> {
      try {
        const listed = await docker.listContainers({
          all: true,
          filters: { label: [`${PIPELINE_LABEL}=true`, ...labels] },
        });
        const wanted = new Set(names);
        const byName = new Map<string, Docker.ContainerInfo>();
        for (const c of listed) byName.set((c.Names[0] ?? '').replace(/^\//, ''), c);
        const missing = [...wanted].filter((n) => !byName.has(n));
        if (missing.length > 0) {
          const extra = await docker.listContainers({ all: true, filters: { name: missing.map((n) => `^/${n}$`) } });
          for (const c of extra) byName.set((c.Names[0] ?? '').replace(/^\//, ''), c);
        }
        const containers = await Promise.all(
          [...byName.entries()].map(async ([name, info]): Promise<ContainerState> => {
            const inspected = await docker.getContainer(info.Id).inspect();
            const started = Date.parse(inspected.State.StartedAt);
            return {
              name,
              state: inspected.State.Status,
              running: inspected.State.Running,
              restartCount: inspected.RestartCount,
              startedAt: Number.isFinite(started) && started > 0 ? started : undefined,
              stage: info.Labels[STAGE_LABEL],
            };
          }),
        );
        return { ok: true, containers: containers.sort((a, b) => a.name.localeCompare(b.name)) };
      } catch (err) {
        return { ok: false, error: errorMessage(err).split('\n')[0], containers: [] };
      }
    },
  };
}
