/**
 * The local model server of `selfheal up` (docs/ARCHITECTURE.md, Analysis): when up starts Ollama itself, and which model the local
 * stack then uses. Pure: the caller says whether something answers and whether the binary is installed.
 */

/**
 * The model `scripts/dev.sh llm` registers (SmolLM2-135M-Instruct, Q4_1) and the one `selfheal up` gives its workers
 * when it starts Ollama itself and OLLAMA_MODEL is not set. Small enough for a laptop and CI; often wrong, which
 * validation and the safety policy absorb. Production keeps OLLAMA_MODEL's default (a model of a few billion
 * parameters).
 */
export const LOCAL_MODEL = 'smollm2:135m';

/** Ollama's own default port. */
export const DEFAULT_OLLAMA_PORT = 11434;

/**
 * The address to serve on (`127.0.0.1:11434`) when `host` is Ollama's default loopback address —
 * http://127.0.0.1:11434 or http://localhost:11434, with or without a trailing slash — else undefined. Any other
 * address is someone else's server: up never starts one there.
 */
export function defaultLoopbackListen(host: string): string | undefined {
  let url: URL;
  try {
    url = new URL(host);
  } catch {
    return undefined;
  }
  if (url.protocol !== 'http:') return undefined;
  if (!['127.0.0.1', 'localhost'].includes(url.hostname)) return undefined;
  if (url.port !== String(DEFAULT_OLLAMA_PORT)) return undefined;
  if ((url.pathname !== '/' && url.pathname !== '') || url.search || url.username || url.password) return undefined;
  return `127.0.0.1:${DEFAULT_OLLAMA_PORT}`;
}

export const LocalOllamaSkip = {
  /** OLLAMA_HOST names another address: a server of the operator's. */
  notDefault: 'not_default_address',
  /** Something already answers there: used as it is. */
  answers: 'answers',
  /** No installed binary (`scripts/dev.sh llm`, or OLLAMA_BIN). */
  notInstalled: 'not_installed',
} as const;
export type LocalOllamaSkip = (typeof LocalOllamaSkip)[keyof typeof LocalOllamaSkip];

export type LocalOllamaDecision =
  | { start: true; /** host:port to serve on */ listen: string; binary: string }
  | { start: false; reason: LocalOllamaSkip };

/**
 * Whether `selfheal up` starts `ollama serve` itself: only for the default loopback address, only when nothing
 * answers there, only when the binary is installed.
 */
export function decideLocalOllama(input: {
  /** OLLAMA_HOST. */
  host: string;
  /** Whether an Ollama API answers at `host`. */
  answers: boolean;
  /** The installed binary, or undefined. */
  binary: string | undefined;
}): LocalOllamaDecision {
  const listen = defaultLoopbackListen(input.host);
  if (!listen) return { start: false, reason: LocalOllamaSkip.notDefault };
  if (input.answers) return { start: false, reason: LocalOllamaSkip.answers };
  if (!input.binary) return { start: false, reason: LocalOllamaSkip.notInstalled };
  return { start: true, listen, binary: input.binary };
}

/**
 * The model the workers use: the operator's OLLAMA_MODEL when set (non-blank), else the small local model when up
 * started the server itself, else undefined (the configured default stands).
 */
export function localModelFor(userModel: string | undefined, startedLocally: boolean): string | undefined {
  if (userModel?.trim()) return undefined;
  return startedLocally ? LOCAL_MODEL : undefined;
}

/**
 * Whether `/api/tags`'s model names hold `wanted`: the same name, or `wanted` without a tag and the name with
 * `:latest` or any tag of it.
 */
export function modelListed(names: readonly string[], wanted: string): boolean {
  const hasTag = wanted.includes(':');
  return names.some((n) => n === wanted || (!hasTag && (n === `${wanted}:latest` || n.split(':')[0] === wanted)));
}
