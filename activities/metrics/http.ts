import type { HealthTarget } from '../../core/config';
import { redactSecrets } from '../../core/redact';
import { isHealthyStatus, type Snapshot } from '../../core/snapshot';
import { withoutCredentials } from '../url-credentials';
import { errorLine } from './shared';

const HEALTH_TIMEOUT_MS = 2_000;

export async function checkHealthTargets(targets: HealthTarget[], now: () => number): Promise<Snapshot['health']> {
  return Promise.all(
    targets.map(async ({ container, url }) => {
      const t0 = now();
      try {
        const target = withoutCredentials(new URL(url));
        const res = await fetch(target.url, {
          headers: target.headers,
          signal: AbortSignal.timeout(HEALTH_TIMEOUT_MS),
        });
        await res.body?.cancel();
        return {
          container,
          url: redactSecrets(url),
          ok: isHealthyStatus(res.status),
          status: res.status,
          latencyMs: now() - t0,
        };
      } catch (err) {
        return { container, url: redactSecrets(url), ok: false, error: errorLine(err), latencyMs: now() - t0 };
      }
    }),
  );
}

export async function checkOllama(host: string, model: string): Promise<Snapshot['ollama']> {
  try {
    const target = withoutCredentials(new URL('/api/tags', host));
    const res = await fetch(target.url, { headers: target.headers, signal: AbortSignal.timeout(HEALTH_TIMEOUT_MS) });
    if (!res.ok) return { reachable: false, modelPresent: false, error: `HTTP ${res.status}` };
    const body = (await res.json()) as { models?: { name?: string; model?: string }[] };
    const names = (body.models ?? []).map((m) => m.name ?? m.model ?? '');
    const modelPresent = names.some((n) => n === model || n === `${model}:latest`);
    return { reachable: true, modelPresent };
  } catch (err) {
    return { reachable: false, modelPresent: false, error: errorLine(err) };
  }
}
