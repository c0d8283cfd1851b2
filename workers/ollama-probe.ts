/**
 * Is a model server there, and does it have the model: `GET /api/tags`, for the CLI (doctor, up) and the HTTP
 * server's /health alike.
 */
import { withoutCredentials } from '../activities/url-credentials';
import { modelListed } from '../core/local-model';
import { redactSecrets } from '../core/redact';
import { errorFirstLine } from '../core/errors';

export type OllamaTags = { answers: true; models: string[] } | { answers: false; error: string };

/** `GET /api/tags` at the host: whether an Ollama API answers, and the names of the models it has. */
export async function ollamaTags(host: string, timeoutMs = 2_000): Promise<OllamaTags> {
  try {
    // A password-protected server (http://user:password@host): the password goes as a header, never in an error.
    const { url, headers } = withoutCredentials(new URL('/api/tags', host));
    const res = await fetch(url, { headers, signal: AbortSignal.timeout(timeoutMs) });
    if (!res.ok) {
      await res.body?.cancel();
      return { answers: false, error: `HTTP ${res.status}` };
    }
    const body = (await res.json()) as { models?: { name?: string; model?: string }[] };
    return { answers: true, models: (body.models ?? []).map((m) => m.name ?? m.model ?? '') };
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause?.code;
    return {
      answers: false,
      error: cause ?? redactSecrets(errorFirstLine(err)),
    };
  }
}

/** The model server and the configured model, as doctor and /health report them. */
export interface OllamaState {
  /** Whether an Ollama API answers at the host. */
  answers: boolean;
  /** Whether `/api/tags` lists the model (false when nothing answers). */
  modelPresent: boolean;
  error?: string;
}

export async function ollamaState(host: string, model: string, timeoutMs = 2_000): Promise<OllamaState> {
  const tags = await ollamaTags(host, timeoutMs);
  if (!tags.answers) return { answers: false, modelPresent: false, error: tags.error };
  return { answers: true, modelPresent: modelListed(tags.models, model) };
}
