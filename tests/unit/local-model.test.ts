import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  decideLocalOllama,
  defaultLoopbackListen,
  LOCAL_MODEL,
  localModelFor,
  LocalOllamaSkip,
  modelListed,
} from '../../core/local-model';
import { findOllamaBin, ollamaCacheDir, ollamaModelsDir } from '../../starter/ollama-local';

describe('defaultLoopbackListen: only Ollama’s default loopback address', () => {
  const cases: [string, string | undefined][] = [
    ['http://127.0.0.1:11434', '127.0.0.1:11434'],
    ['http://127.0.0.1:11434/', '127.0.0.1:11434'],
    ['http://localhost:11434', '127.0.0.1:11434'],
    ['http://LOCALHOST:11434/', '127.0.0.1:11434'],
    ['http://127.0.0.1:11435', undefined],
    ['http://127.0.0.1', undefined],
    ['https://127.0.0.1:11434', undefined],
    ['http://0.0.0.0:11434', undefined],
    ['http://[::1]:11434', undefined],
    ['http://ollama:11434', undefined],
    ['http://10.0.0.5:11434', undefined],
    ['http://127.0.0.1:11434/proxy', undefined],
    ['http://user:secret@127.0.0.1:11434', undefined],
    ['not a url', undefined],
  ];
  it.each(cases)('%s → %s', (host, want) => {
    expect(defaultLoopbackListen(host)).toBe(want);
  });
});

describe('decideLocalOllama', () => {
  const bin = '/cache/ollama/bin/ollama';
  const cases: {
    name: string;
    input: Parameters<typeof decideLocalOllama>[0];
    want: ReturnType<typeof decideLocalOllama>;
  }[] = [
    {
      name: 'default address, nothing answers, installed: start it',
      input: { host: 'http://127.0.0.1:11434', answers: false, binary: bin },
      want: { start: true, listen: '127.0.0.1:11434', binary: bin },
    },
    {
      name: 'localhost is the default too',
      input: { host: 'http://localhost:11434/', answers: false, binary: bin },
      want: { start: true, listen: '127.0.0.1:11434', binary: bin },
    },
    {
      name: 'something answers: use it',
      input: { host: 'http://127.0.0.1:11434', answers: true, binary: bin },
      want: { start: false, reason: LocalOllamaSkip.answers },
    },
    {
      name: 'not installed: nothing to start',
      input: { host: 'http://127.0.0.1:11434', answers: false, binary: undefined },
      want: { start: false, reason: LocalOllamaSkip.notInstalled },
    },
    {
      name: 'another port on loopback is the operator’s',
      input: { host: 'http://127.0.0.1:12000', answers: false, binary: bin },
      want: { start: false, reason: LocalOllamaSkip.notDefault },
    },
    {
      name: 'a remote server is the operator’s, even when down',
      input: { host: 'http://gpu-box:11434', answers: false, binary: bin },
      want: { start: false, reason: LocalOllamaSkip.notDefault },
    },
  ];
  it.each(cases)('$name', ({ input, want }) => {
    expect(decideLocalOllama(input)).toEqual(want);
  });
});

describe('localModelFor: the small model only when up started the server and the operator named none', () => {
  const cases: [string | undefined, boolean, string | undefined][] = [
    [undefined, true, LOCAL_MODEL],
    ['', true, LOCAL_MODEL],
    ['   ', true, LOCAL_MODEL],
    ['llama3.2:3b', true, undefined],
    [undefined, false, undefined],
    ['qwen2.5:7b', false, undefined],
  ];
  it.each(cases)('OLLAMA_MODEL=%j, started=%s → %j', (user, started, want) => {
    expect(localModelFor(user, started)).toBe(want);
  });
});

describe('modelListed', () => {
  const cases: [string[], string, boolean][] = [
    [['smollm2:135m'], 'smollm2:135m', true],
    [['smollm2:135m'], 'smollm2:360m', false],
    [['smollm2:135m'], 'smollm2', true],
    [['llama3.2:latest'], 'llama3.2', true],
    [['llama3.2:3b'], 'llama3.2:latest', false],
    [['llama3.2:3b-instruct'], 'llama3.2:3b', false],
    [[], 'smollm2:135m', false],
    [[''], 'smollm2:135m', false],
  ];
  it.each(cases)('%j has %s: %s', (names, wanted, want) => {
    expect(modelListed(names, wanted)).toBe(want);
  });
});

describe('where scripts/llm.sh installs', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'selfheal-llm-unit-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('SELFHEAL_CACHE_DIR, else XDG_CACHE_HOME/selfheal, else ~/.cache/selfheal — as the script', () => {
    expect(ollamaCacheDir({ SELFHEAL_CACHE_DIR: '/c', HOME: '/h' })).toBe('/c/ollama');
    expect(ollamaCacheDir({ XDG_CACHE_HOME: '/x', HOME: '/h' })).toBe('/x/selfheal/ollama');
    expect(ollamaCacheDir({ HOME: '/h' })).toBe('/h/.cache/selfheal/ollama');
    expect(ollamaModelsDir({ HOME: '/h' })).toBe('/h/.cache/selfheal/ollama/models');
  });

  it('finds the cache’s bin/ollama when executable; OLLAMA_BIN overrides it', () => {
    const env = { SELFHEAL_CACHE_DIR: dir, HOME: dir };
    expect(findOllamaBin(env)).toBeUndefined();
    const bin = path.join(dir, 'ollama', 'bin', 'ollama');
    mkdirSync(path.dirname(bin), { recursive: true });
    writeFileSync(bin, '#!/bin/sh\n');
    expect(findOllamaBin(env)).toBeUndefined();
    chmodSync(bin, 0o755);
    expect(findOllamaBin(env)).toBe(bin);
    expect(findOllamaBin({ ...env, OLLAMA_BIN: path.join(dir, 'nope') })).toBeUndefined();
    expect(findOllamaBin({ ...env, OLLAMA_BIN: bin })).toBe(bin);
  });
});
