/**
 * The real model for tests: SELFHEAL_TEST_OLLAMA_HOST / SELFHEAL_TEST_OLLAMA_MODEL when set (a server someone runs),
 * else the Ollama and smollm2:135m that `scripts/dev.sh llm` installed (`.ci/run` runs it), served for this test
 * file alone on a free loopback port and stopped by `stop()`. `problem` says why there is no model, for a skip
 * message — or, under CI=true, for a failure.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LOCAL_MODEL, modelListed } from '../../core/local-model';
import { findOllamaBin, ollamaModelsDir, startOllamaServer } from '../../starter/ollama-local';
import { ollamaTags } from '../../workers/ollama-probe';
import { stopProcessGroup } from '../../starter/temporal-local';
import { errorMessage } from '../../core/errors';
import { heldPort } from './env';

export type RealModel =
  | { problem: undefined; host: string; model: string; stop: () => Promise<void> }
  | { problem: string; host?: undefined; model?: undefined; stop: () => Promise<void> };

const none = () => Promise.resolve();

export async function realModel(): Promise<RealModel> {
  const envHost = process.env.SELFHEAL_TEST_OLLAMA_HOST;
  if (envHost) {
    const host = envHost.includes('://') ? envHost : `http://${envHost}`;
    const model = process.env.SELFHEAL_TEST_OLLAMA_MODEL || LOCAL_MODEL;
    const tags = await ollamaTags(host, 5_000);
    if (!tags.answers) return { problem: `no Ollama answers at ${host}: ${tags.error}`, stop: none };
    if (!modelListed(tags.models, model)) {
      return {
        problem: `the model ${model} is not at ${host} (it has: ${tags.models.join(', ') || 'none'})`,
        stop: none,
      };
    }
    return { problem: undefined, host, model, stop: none };
  }
  const binary = findOllamaBin();
  if (!binary) return { problem: 'the local model is not installed: run scripts/dev.sh llm', stop: none };
  const logDir = mkdtempSync(path.join(os.tmpdir(), 'selfheal-test-ollama-'));
  const listen = `127.0.0.1:${await heldPort()}`;
  let server: ChildProcess;
  try {
    server = await startOllamaServer({
      binary,
      listen,
      modelsDir: ollamaModelsDir(),
      logFile: path.join(logDir, 'ollama.log'),
    });
  } catch (err) {
    return { problem: errorMessage(err), stop: none };
  }
  const stop = async () => {
    await stopProcessGroup(server);
    rmSync(logDir, { recursive: true, force: true });
  };
  const host = `http://${listen}`;
  const tags = await ollamaTags(host, 5_000);
  if (!tags.answers || !modelListed(tags.models, LOCAL_MODEL)) {
    await stop();
    return { problem: `${LOCAL_MODEL} is not in ${ollamaModelsDir()}: run scripts/dev.sh llm`, stop: none };
  }
  return { problem: undefined, host, model: LOCAL_MODEL, stop };
}
