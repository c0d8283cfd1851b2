/**
 * The local Ollama of `selfheal up`: where `scripts/dev.sh llm` installed it, what a server answers, and starting
 * `ollama serve` the way the Temporal dev server is started (its own process group, stopped with it).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, mkdirSync, openSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ollamaTags } from '../workers/ollama-probe';
import { stopProcessGroup } from './temporal-local';

/** scripts/llm.sh's folder: SELFHEAL_CACHE_DIR (default `$XDG_CACHE_HOME/selfheal`, `~/.cache/selfheal`) + `ollama`. */
export function ollamaCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const cache =
    env.SELFHEAL_CACHE_DIR ||
    path.join(env.XDG_CACHE_HOME || path.join(env.HOME || os.homedir(), '.cache'), 'selfheal');
  return path.join(path.resolve(cache), 'ollama');
}

/** The model store of the local server (OLLAMA_MODELS): where scripts/llm.sh registered the small model. */
export function ollamaModelsDir(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(ollamaCacheDir(env), 'models');
}

/** The installed `ollama` binary: OLLAMA_BIN when set, else the cache's `bin/ollama`; undefined when not executable. */
export function findOllamaBin(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const file = env.OLLAMA_BIN || path.join(ollamaCacheDir(env), 'bin', 'ollama');
  try {
    accessSync(file, constants.X_OK);
    return file;
  } catch {
    return undefined;
  }
}

export interface OllamaServerOptions {
  binary: string;
  /** host:port to serve on (loopback). */
  listen: string;
  /** OLLAMA_MODELS of the server. */
  modelsDir: string;
  /** Where the server's output goes. */
  logFile: string;
  /** The environment the server inherits (OLLAMA_HOST and OLLAMA_MODELS are set over it). */
  env?: NodeJS.ProcessEnv;
}

/**
 * Starts `ollama serve` in its own process group (like the Temporal dev server: stopProcessGroup stops it, runners
 * included) and waits until `/api/tags` answers.
 */
export async function startOllamaServer(opts: OllamaServerOptions, timeoutMs = 30_000): Promise<ChildProcess> {
  mkdirSync(path.dirname(opts.logFile), { recursive: true });
  mkdirSync(opts.modelsDir, { recursive: true });
  const out = openSync(opts.logFile, 'a');
  const child = spawn(opts.binary, ['serve'], {
    env: { ...(opts.env ?? process.env), OLLAMA_HOST: opts.listen, OLLAMA_MODELS: opts.modelsDir },
    stdio: ['ignore', out, out],
    detached: true,
  });
  const url = `http://${opts.listen}`;
  const deadline = Date.now() + timeoutMs;
  let exited: number | null | undefined;
  let spawnError: Error | undefined;
  child.once('exit', (code) => (exited = code));
  child.once('error', (err) => (spawnError = err));
  while (Date.now() < deadline) {
    if (spawnError) throw new Error(`ollama serve could not start: ${spawnError.message}`);
    if (exited !== undefined) throw new Error(`ollama serve exited with code ${exited}; see ${opts.logFile}`);
    if ((await ollamaTags(url, 1_000)).answers) return child;
    await new Promise((r) => setTimeout(r, 200));
  }
  await stopProcessGroup(child);
  throw new Error(`ollama serve did not answer at ${url} within ${timeoutMs} ms; see ${opts.logFile}`);
}
