/** `selfheal up`'s model step: the local Ollama server, started or found, and the model the workers use. */
import path from 'node:path';
import type { Config } from '../core/config';
import {
  decideLocalOllama,
  defaultLoopbackListen,
  LOCAL_MODEL,
  localModelFor,
  LocalOllamaSkip,
  modelListed,
} from '../core/local-model';
import { findOllamaBin, ollamaModelsDir, startOllamaServer } from './ollama-local';
import { ollamaTags } from '../workers/ollama-probe';
import { stopProcessGroup } from './temporal-local';
import type { Component } from './up';
import { redactSecrets } from '../core/redact';

/**
 * The model server: started here like the dev server, but only at Ollama's default loopback address (any other
 * address is a server of the operator's) and only when `scripts/dev.sh llm` installed it. Without it, analysis
 * falls back to the runbook: never a reason not to come up. A server started here is pushed onto `components`;
 * `env` gets the OLLAMA_MODEL of the local model when there is one.
 */
export async function startModel(opts: {
  config: Config;
  /** The caller's environment (OLLAMA_BIN, OLLAMA_MODEL, the models directory). */
  callerEnv: NodeJS.ProcessEnv;
  /** The workers' environment. */
  env: NodeJS.ProcessEnv;
  logDir: string;
  components: Component[];
  say: (line: string) => void;
}): Promise<{ ollamaStarted: boolean; model: string }> {
  const { config, env, logDir, components, say } = opts;
  // The address as shown: a password in it (http://user:password@host) is never printed.
  const shownHost = redactSecrets(config.OLLAMA_HOST);
  let ollamaStarted = false;
  const tags = await ollamaTags(config.OLLAMA_HOST);
  const decision = decideLocalOllama({
    host: config.OLLAMA_HOST,
    answers: tags.answers,
    binary: findOllamaBin(opts.callerEnv),
  });
  if (decision.start) {
    const modelsDir = ollamaModelsDir(opts.callerEnv);
    const server = await startOllamaServer({
      binary: decision.binary,
      listen: decision.listen,
      modelsDir,
      logFile: path.join(logDir, 'ollama.log'),
      env: opts.callerEnv,
    });
    components.push({ name: 'ollama', pid: server.pid, stop: () => stopProcessGroup(server) });
    ollamaStarted = true;
  }
  const localModel = localModelFor(opts.callerEnv.OLLAMA_MODEL, ollamaStarted);
  if (localModel) env.OLLAMA_MODEL = localModel;
  const model = localModel ?? config.OLLAMA_MODEL;
  const listed = ollamaStarted ? await ollamaTags(config.OLLAMA_HOST) : tags;
  const modelNote = !listed.answers
    ? ''
    : modelListed(listed.models, model)
      ? ' (listed)'
      : ` (not listed: ${model === LOCAL_MODEL ? '`scripts/dev.sh llm` registers it' : `ollama pull ${model}`}; the runbook plans meanwhile)`;
  if (ollamaStarted) {
    say(
      `Model: local Ollama server started on ${shownHost} (log ${path.join(logDir, 'ollama.log')}), model ${model}${modelNote}`,
    );
  } else if (tags.answers) {
    say(`Model: using the Ollama server at ${shownHost}, model ${model}${modelNote}`);
  } else {
    const why =
      decision.start === false && decision.reason === LocalOllamaSkip.notInstalled
        ? 'Ollama is not installed (`scripts/dev.sh llm`, or OLLAMA_BIN)'
        : defaultLoopbackListen(config.OLLAMA_HOST)
          ? 'nothing answers'
          : 'nothing answers, and up only starts one at http://127.0.0.1:11434';
    say(`Model: none at ${shownHost} (${why}); diagnosis uses the rule-based runbook`);
  }
  return { ollamaStarted, model };
}
