/** Container and service detectors: failing health checks or stopped containers, and the LLM server. */
import { anomaly, type Detector } from './common';
import type { Anomaly } from '../types';

export const detectUnhealthyContainer: Detector = (snapshot, history, t, now) => {
  const out: Anomaly[] = [];
  const seen = new Set<string>();
  for (const result of snapshot.health) {
    if (result.ok) continue;
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
    seen.add(result.container);
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
  for (const c of snapshot.containers) {
    if (c.running || seen.has(c.name)) continue;
    out.push(
      anomaly(
        'unhealthy_container',
        c.name,
        'critical',
        `${c.name}: container is ${c.state}`,
        { state: c.state, restartCount: c.restartCount },
        now,
      ),
    );
  }
  return out;
};

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
