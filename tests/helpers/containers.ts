/**
 * Small containers for Docker-native health tests, from the pipeline image (busybox and node, nothing pulled),
 * labelled with the test environment's prefix so that only its own `selfheal up` watches them.
 */
import { execFileSync } from 'node:child_process';
import type Docker from 'dockerode';
import { ensurePipelineImage } from '../../pipeline/image';
import { PREFIX_LABEL } from '../../pipeline/runner-support';
import type { TestEnv } from './env';

/** Healthy while /tmp/healthy exists; the entry points create it, so a restart makes the container healthy again. */
export const HEALTHCHECK = {
  Test: ['CMD', '/bin/busybox', 'test', '-f', '/tmp/healthy'],
  Interval: 1_000_000_000,
  Timeout: 2_000_000_000,
  Retries: 1,
  StartPeriod: 0,
};
/** busybox sh as PID 1 ignores SIGTERM: a stop waits for the stop timeout, then kills (exit code 137). */
export const SLEEPER = ['/bin/busybox', 'sh', '-c', 'busybox touch /tmp/healthy; while :; do busybox sleep 1; done'];
/** Ends on SIGTERM (a trap, so PID 1 honours it) with code 143, as a process without a handler would. */
export const STOPPABLE = [
  '/bin/busybox',
  'sh',
  '-c',
  "trap 'exit 143' TERM; while :; do busybox sleep 1 & wait $!; done",
];

export interface TestContainerOptions {
  labels?: Record<string, string>;
  healthcheck?: boolean;
  /** Host network (to serve HTTP on 127.0.0.1); default none. */
  host?: boolean;
  /** Docker's restart policy; default none. */
  restartPolicy?: Docker.HostRestartPolicy;
}

/** Creates and starts `name` running `entrypoint`; `created` collects the names for the teardown. */
export async function runTestContainer(
  docker: Docker,
  t: TestEnv,
  name: string,
  entrypoint: string[],
  opts: TestContainerOptions = {},
): Promise<Docker.Container> {
  const { image } = await ensurePipelineImage(docker);
  const container = await docker.createContainer({
    name,
    Image: image,
    Entrypoint: entrypoint,
    Cmd: [],
    Labels: { [PREFIX_LABEL]: t.prefix, ...opts.labels },
    ...(opts.healthcheck ? { Healthcheck: HEALTHCHECK } : {}),
    HostConfig: {
      NetworkMode: opts.host ? 'host' : 'none',
      ...(opts.restartPolicy ? { RestartPolicy: opts.restartPolicy } : {}),
    },
  });
  await container.start();
  return container;
}

/** Makes a container's HEALTHCHECK (and a health server reading the same file) fail. */
export function makeUnhealthy(name: string): void {
  execFileSync('docker', ['exec', name, '/bin/busybox', 'rm', '-f', '/tmp/healthy']);
}

/** Removes the test's containers, whatever their state. */
export async function removeTestContainers(docker: Docker, t: TestEnv): Promise<void> {
  const listed = await docker.listContainers({ all: true, filters: { label: [`${PREFIX_LABEL}=${t.prefix}`] } });
  await Promise.all(
    listed.map((c) =>
      docker
        .getContainer(c.Id)
        .remove({ force: true })
        .catch(() => undefined),
    ),
  );
}
