/**
 * Which containers selfheal watches and may restart, from their names and labels, with willfarrell/autoheal's
 * conventions: `autoheal=true` puts a container in scope like selfheal's own `selfheal.enable=true`, and
 * `autoheal.stop.timeout` like `selfheal.stop.timeout`. Pure: the labels come from Docker's inspection.
 */
import { sanitizeUntrusted } from './redact';

/** selfheal's label that puts a container in scope for restart. */
export const ENABLE_LABEL = 'selfheal.enable';
/** autoheal's label, honoured unless AUTOHEAL_LABEL=false. */
export const AUTOHEAL_LABEL = 'autoheal';
/** Seconds Docker gives the container to stop on restart, selfheal's label first. */
export const STOP_TIMEOUT_LABELS = ['selfheal.stop.timeout', 'autoheal.stop.timeout'] as const;
export const COMPOSE_PROJECT_LABEL = 'com.docker.compose.project';
export const COMPOSE_SERVICE_LABEL = 'com.docker.compose.service';

/** Health-check outputs kept as evidence, and the characters of each. */
export const HEALTH_LOG_ENTRIES = 3;
export const HEALTH_LOG_CHARS = 200;

/** Docker's health status (`State.Health.Status`) of a container that declares a HEALTHCHECK. */
export type DockerHealth = 'starting' | 'healthy' | 'unhealthy';

/** The label that puts a container in scope for restart (`selfheal.enable=true` or `autoheal=true`), if any. */
export function scopeLabel(labels: Record<string, string> | undefined, autohealLabel: boolean): string | undefined {
  if (labels?.[ENABLE_LABEL] === 'true') return `${ENABLE_LABEL}=true`;
  if (autohealLabel && labels?.[AUTOHEAL_LABEL] === 'true') return `${AUTOHEAL_LABEL}=true`;
  return undefined;
}

/**
 * The longest stop timeout a restart uses: the restart activity has 2 minutes for the stop, the start, the wait for
 * health (30 s) and the notice.
 */
export const STOP_TIMEOUT_MAX_SECONDS = 60;

/**
 * The stop timeout a container's labels ask for. A label that is not a whole number of seconds is reported
 * (`invalid`) and the next label, or the default, applies; one above STOP_TIMEOUT_MAX_SECONDS is cut to it
 * (`clamped` says so).
 */
export function stopTimeoutFromLabels(labels: Record<string, string> | undefined): {
  seconds?: number;
  label?: string;
  invalid?: string[];
  clamped?: string;
} {
  const invalid: string[] = [];
  for (const label of STOP_TIMEOUT_LABELS) {
    const raw = labels?.[label];
    if (raw === undefined) continue;
    if (/^\d{1,6}$/.test(raw.trim())) {
      const asked = Number(raw);
      const seconds = Math.min(asked, STOP_TIMEOUT_MAX_SECONDS);
      return {
        seconds,
        label,
        ...(invalid.length ? { invalid } : {}),
        ...(asked > seconds
          ? { clamped: `${label}=${asked} is above ${STOP_TIMEOUT_MAX_SECONDS} s: ${seconds} s used` }
          : {}),
      };
    }
    invalid.push(`${label}=${JSON.stringify(raw.slice(0, 40))} is not a whole number of seconds`);
  }
  return invalid.length ? { invalid } : {};
}

/** The compose service `<project>/<service>` a container belongs to, if any. */
export function composeService(labels: Record<string, string> | undefined): string | undefined {
  const service = labels?.[COMPOSE_SERVICE_LABEL];
  if (!service) return undefined;
  const project = labels?.[COMPOSE_PROJECT_LABEL];
  return project ? `${project}/${service}` : service;
}

/** A health status of Docker's, or undefined for anything else (no HEALTHCHECK: `none` or absent). */
export function dockerHealth(status: string | undefined): DockerHealth | undefined {
  return status === 'starting' || status === 'healthy' || status === 'unhealthy' ? status : undefined;
}

/** One health-check result of `State.Health.Log`, as evidence. */
export interface HealthCheckResult {
  exitCode: number;
  /** The check's output, redacted and truncated. */
  output: string;
  /** epoch ms the check ended, when known. */
  at?: number;
}

/** The last health-check results (`State.Health.Log`, oldest first), bounded, redacted and truncated. */
export function healthLogEvidence(
  log: readonly { ExitCode?: number; Output?: string; End?: string }[] | undefined,
): HealthCheckResult[] {
  return (log ?? []).slice(-HEALTH_LOG_ENTRIES).map((entry) => {
    const end = Date.parse(entry.End ?? '');
    return {
      exitCode: entry.ExitCode ?? -1,
      output: sanitizeUntrusted((entry.Output ?? '').trim(), HEALTH_LOG_CHARS),
      ...(Number.isFinite(end) && end > 0 ? { at: end } : {}),
    };
  });
}
