/**
 * Static checks of the deployment (docker-compose.yml, Dockerfile, temporal/): images cannot be pulled where the
 * tests run, so the compose file is checked without a Docker engine. Each check is a function returning the list of
 * problems it finds; the real files must give none, and mutated copies in memory must give some (so every check can
 * fail).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import Ajv from 'ajv';
import draft07 from 'ajv/dist/refs/json-schema-draft-07.json';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { configSchema, parseConfig } from '../../core/config';
import { SearchAttr } from '../../workflows/definitions';

const ROOT = path.resolve(__dirname, '../..');
const COMPOSE_PATH = path.join(ROOT, 'docker-compose.yml');
/**
 * The Compose Specification schema as the Compose v2 CLI embeds it: `scripts/dev.sh setup` copies it from the Go
 * module compose-go (COMPOSE_GO_VERSION there) into `.tools/`.
 */
const COMPOSE_GO_VERSION = 'v2.9.1';
function findSchema(): string {
  const file = path.join(ROOT, '.tools', `compose-spec-${COMPOSE_GO_VERSION}.json`);
  if (!existsSync(file)) throw new Error(`${file} is missing: run scripts/dev.sh setup`);
  return file;
}
const SCHEMA_PATH = findSchema();
const NAMESPACE_SCRIPT = path.join(ROOT, 'temporal', 'setup-namespace.sh');

/** Variables the compose file requires (`${X:?...}`); everything else has a default. */
const REQUIRED_SECRETS = ['POSTGRES_PASSWORD', 'TEMPORAL_DB_PASSWORD', 'SELFHEAL_DB_PASSWORD', 'REDIS_PASSWORD'];
const TEST_ENV: Record<string, string> = Object.fromEntries(
  REQUIRED_SECRETS.map((name, i) => [name, `test-secret-${i}-0123456789abcdef`]),
);
/** Services whose ports are published (bound to 127.0.0.1 by default); no other service publishes any. */
const UI_SERVICES = new Set(['temporal', 'temporal-ui', 'prometheus', 'metrics']);
const PROXY_SERVICE = 'docker-socket-proxy';
const ACTIONS_SERVICE = 'actions-agent';
const DOCKER_API_NETWORK = 'docker-api';
/** Addresses whose compose default is a service of the compose file (or its published Web UI), not core/config.ts's
 * 127.0.0.1 default. */
const SERVICE_ADDRESSES = new Set([
  'DATABASE_URL',
  'SELFHEAL_DATABASE_URL',
  'REDIS_URL',
  'OLLAMA_HOST',
  'TEMPORAL_UI_URL',
]);
/** Environment of selfheal services besides core/config.ts's variables. */
const EXTRA_ENV = new Set(['DOCKER_HOST', 'PIPELINE_CONTAINER']);

type Doc = Record<string, unknown>;
type Service = Record<string, unknown>;
type Env = Record<string, string | undefined>;

// ---- reading ----------------------------------------------------------------------------------------------------

function parseYaml(text: string): Doc {
  // Merge keys (<<) as docker compose resolves them; the file uses many aliases by design.
  return parse(text, { merge: true, maxAliasCount: 10_000 }) as Doc;
}

function readRawCompose(): Doc {
  return parseYaml(readFileSync(COMPOSE_PATH, 'utf8'));
}

/** Compose's interpolation of one string: $$, $X, ${X}, ${X:-d}, ${X-d}, ${X:?e}, ${X?e}, ${X:+a}, ${X+a}. */
export function interpolate(text: string, env: Env): string {
  let out = '';
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c !== '$') {
      out += c;
      i++;
      continue;
    }
    const next = text[i + 1];
    if (next === '$') {
      out += '$';
      i += 2;
      continue;
    }
    if (next === '{') {
      let depth = 1;
      let j = i + 2;
      for (; j < text.length && depth > 0; j++) {
        if (text[j] === '{') depth++;
        else if (text[j] === '}') depth--;
      }
      if (depth !== 0) throw new Error(`unclosed \${ in ${JSON.stringify(text)}`);
      out += expand(text.slice(i + 2, j - 1), env);
      i = j;
      continue;
    }
    const m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(text.slice(i + 1));
    if (m) {
      out += env[m[0]] ?? '';
      i += 1 + m[0].length;
      continue;
    }
    out += c;
    i++;
  }
  return out;
}

function expand(inner: string, env: Env): string {
  const m = /^([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([\s\S]*))?$/.exec(inner);
  if (!m) throw new Error(`invalid interpolation \${${inner}}`);
  const [, name = '', op, arg = ''] = m;
  const value = env[name];
  const set = value !== undefined;
  const nonEmpty = set && value !== '';
  switch (op) {
    case undefined:
      return value ?? '';
    case ':-':
      return nonEmpty ? value : interpolate(arg, env);
    case '-':
      return set ? value : interpolate(arg, env);
    case ':?':
    case '?':
      if (op === ':?' ? nonEmpty : set) return value!;
      throw new Error(`required variable ${name} is missing: ${arg}`);
    case ':+':
      return nonEmpty ? interpolate(arg, env) : '';
    case '+':
      return set ? interpolate(arg, env) : '';
    default:
      throw new Error(`invalid interpolation \${${inner}}`);
  }
}

function interpolateAll(value: unknown, env: Env): unknown {
  if (typeof value === 'string') return interpolate(value, env);
  if (Array.isArray(value)) return value.map((v) => interpolateAll(v, env));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, interpolateAll(v, env)]));
  }
  return value;
}

function loadCompose(env: Env = TEST_ENV): Doc {
  return interpolateAll(readRawCompose(), env) as Doc;
}

function services(doc: Doc): Record<string, Service> {
  return (doc.services ?? {}) as Record<string, Service>;
}

function envOf(service: Service): Env {
  const env = service.environment;
  if (Array.isArray(env)) {
    return Object.fromEntries(
      env.map((entry: string) => {
        const eq = entry.indexOf('=');
        return eq < 0 ? [entry, undefined] : [entry.slice(0, eq), entry.slice(eq + 1)];
      }),
    );
  }
  return Object.fromEntries(
    Object.entries((env ?? {}) as Record<string, string | number | boolean | null>).map(([k, v]) => [
      k,
      v === null ? undefined : String(v),
    ]),
  );
}

function profilesOf(service: Service): string[] {
  return (service.profiles as string[] | undefined) ?? [];
}

function isBuilt(service: Service): boolean {
  return service.build !== undefined;
}

function clone<T>(v: T): T {
  return structuredClone(v);
}

// ---- checks -----------------------------------------------------------------------------------------------------

function schemaValidator(): (doc: Doc) => string[] {
  const schema = JSON.parse(readFileSync(SCHEMA_PATH, 'utf8')) as { $schema?: string };
  // The schema declares draft-07, Ajv's default dialect, but spells the meta-schema's id with https and no '#':
  // registered under that id too, so the schema itself is still checked against draft-07. Not strict: it uses
  // annotations Ajv does not know ("deprecated").
  if (!/^https?:\/\/json-schema\.org\/draft-07\/schema#?$/.test(schema.$schema ?? '')) {
    throw new Error(`unexpected schema dialect ${schema.$schema}`);
  }
  const ajv = new Ajv({ allErrors: true, strict: false });
  if (!ajv.getSchema(schema.$schema!)) ajv.addMetaSchema({ ...draft07, $id: schema.$schema });
  const validate = ajv.compile(schema);
  return (doc) =>
    validate(doc) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? 'invalid'}`);
}

/** (b) Every selfheal service's environment passes core/config.ts; non-pipeline ones spell out every variable. */
function envProblems(doc: Doc): string[] {
  const problems: string[] = [];
  const keys = Object.keys(configSchema.shape);
  for (const [name, service] of Object.entries(services(doc))) {
    if (!isBuilt(service)) continue;
    const env = envOf(service);
    const result = parseConfig(env);
    if (!result.ok) {
      problems.push(...result.problems.map((p) => `${name}: ${p.variable}: ${p.expected}`));
    }
    if (profilesOf(service).includes('pipeline')) continue;
    for (const key of keys) if (!(key in env)) problems.push(`${name}: ${key} is not set explicitly`);
    for (const key of Object.keys(env)) {
      if (!keys.includes(key) && !EXTRA_ENV.has(key)) problems.push(`${name}: unknown variable ${key}`);
    }
  }
  return problems;
}

/** A `${X:-d}` default of a config variable X must mean what core/config.ts's own default means. */
function defaultDriftProblems(raw: Doc): string[] {
  const problems: string[] = [];
  const defaults = parseConfig({});
  if (!defaults.ok) return ['core/config.ts: its defaults do not parse'];
  for (const [name, service] of Object.entries(services(raw))) {
    for (const [key, value] of Object.entries(envOf(service))) {
      const m = /^\$\{([A-Za-z_][A-Za-z0-9_]*):-(.*)\}$/.exec(value ?? '');
      if (!m || m[1] !== key || !(key in configSchema.shape) || SERVICE_ADDRESSES.has(key)) continue;
      const parsed = parseConfig({ [key]: m[2] });
      const want = JSON.stringify(defaults.config[key as keyof typeof defaults.config]);
      const got = parsed.ok ? JSON.stringify(parsed.config[key as keyof typeof parsed.config]) : '(invalid)';
      if (got !== want) problems.push(`${name}: default of ${key} is ${got}, core/config.ts says ${want}`);
    }
  }
  return problems;
}

/** An image reference pinned to a version: a digest, or a tag with at least major.minor that is not `latest`. */
export function imagePinProblem(ref: string): string | undefined {
  if (ref.includes('$')) return `${ref}: not resolved`;
  if (/@sha256:[0-9a-f]{64}$/.test(ref)) return undefined;
  const lastSlash = ref.lastIndexOf('/');
  const colon = ref.indexOf(':', lastSlash + 1);
  const tag = colon < 0 ? '' : ref.slice(colon + 1);
  if (!tag) return `${ref}: no tag (means latest)`;
  if (tag === 'latest') return `${ref}: latest is not a version`;
  if (!/\d+\.\d+/.test(tag)) return `${ref}: tag ${tag} is not an exact version`;
  return undefined;
}

/** FROM lines of a Dockerfile: each base pinned (earlier stage names and scratch excepted). */
export function dockerfileProblems(text: string, file = 'Dockerfile'): string[] {
  const problems: string[] = [];
  const args = new Map<string, string>();
  const stages = new Set<string>();
  let froms = 0;
  const lines = text.replace(/\\\r?\n/g, ' ').split(/\r?\n/);
  for (const line of lines) {
    const arg = /^\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)(?:=(\S*))?/i.exec(line);
    if (arg && froms === 0) args.set(arg[1]!, arg[2] ?? '');
    const from = /^\s*FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?/i.exec(line);
    if (!from) continue;
    froms++;
    const ref = from[1]!.replace(/\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?/g, (all, name: string) => args.get(name) ?? all);
    if (!stages.has(ref) && ref !== 'scratch') {
      const p = imagePinProblem(ref);
      if (p) problems.push(`${file}: FROM ${p}`);
    }
    if (from[2]) stages.add(from[2]);
  }
  if (froms === 0) problems.push(`${file}: no FROM line`);
  return problems;
}

/** (c) Every image is pinned; built services have a Dockerfile whose bases are pinned. */
function pinProblems(doc: Doc, readFile: (p: string) => string = (p) => readFileSync(p, 'utf8')): string[] {
  const problems: string[] = [];
  const dockerfiles = new Set<string>();
  for (const [name, service] of Object.entries(services(doc))) {
    const image = service.image as string | undefined;
    const build = service.build as string | { context?: string; dockerfile?: string } | undefined;
    if (!image && !build) problems.push(`${name}: neither image nor build`);
    if (image) {
      const p = imagePinProblem(image);
      if (p) problems.push(`${name}: ${p}`);
    }
    if (build) {
      const context = typeof build === 'string' ? build : (build.context ?? '.');
      const dockerfile = typeof build === 'string' ? 'Dockerfile' : (build.dockerfile ?? 'Dockerfile');
      dockerfiles.add(path.resolve(ROOT, context, dockerfile));
    }
  }
  for (const file of dockerfiles) {
    let text: string;
    try {
      text = readFile(file);
    } catch {
      problems.push(`${path.relative(ROOT, file)}: missing`);
      continue;
    }
    problems.push(...dockerfileProblems(text, path.relative(ROOT, file)));
  }
  return problems;
}

/** Host IP of a published port, or undefined when it binds every interface. */
function hostIp(port: unknown): string | undefined {
  if (port && typeof port === 'object') return (port as { host_ip?: string }).host_ip || undefined;
  const spec = String(port).replace(/\/(tcp|udp|sctp)$/, '');
  const v6 = /^\[([^\]]+)\]:/.exec(spec);
  if (v6) return v6[1];
  const parts = spec.split(':');
  return parts.length === 3 ? parts[0] : undefined;
}

function volumeSources(service: Service): string[] {
  return ((service.volumes as unknown[] | undefined) ?? []).map((v) =>
    typeof v === 'string' ? v.split(':')[0]! : String((v as { source?: string }).source ?? ''),
  );
}

function networksOf(service: Service): string[] {
  const n = service.networks;
  if (!n) return ['default'];
  return Array.isArray(n) ? (n as string[]) : Object.keys(n);
}

/** (d) Ports, and the Docker socket: only the proxy mounts it, only the actions worker reaches the proxy. */
function exposureProblems(doc: Doc): string[] {
  const problems: string[] = [];
  const all = services(doc);
  for (const [name, service] of Object.entries(all)) {
    const ports = (service.ports as unknown[] | undefined) ?? [];
    if (ports.length > 0 && !UI_SERVICES.has(name))
      problems.push(`${name}: internal service publishes ${JSON.stringify(ports)}`);
    for (const port of ports) {
      const ip = hostIp(port);
      if (ip !== '127.0.0.1') problems.push(`${name}: port ${JSON.stringify(port)} binds ${ip ?? 'every interface'}`);
    }
    if (service.network_mode !== undefined)
      problems.push(`${name}: network_mode ${JSON.stringify(service.network_mode)}`);
    if (service.privileged === true) problems.push(`${name}: privileged`);
    const sock = volumeSources(service).some((s) => s.includes('docker.sock'));
    if (sock && name !== PROXY_SERVICE) problems.push(`${name}: mounts the Docker socket`);
    if (!sock && name === PROXY_SERVICE) problems.push(`${name}: does not mount the Docker socket`);
    const dockerHost = envOf(service).DOCKER_HOST;
    if (name === ACTIONS_SERVICE) {
      if (dockerHost !== `tcp://${PROXY_SERVICE}:2375`) problems.push(`${name}: DOCKER_HOST is ${dockerHost}`);
    } else if (dockerHost !== undefined) {
      problems.push(`${name}: has DOCKER_HOST (only ${ACTIONS_SERVICE} reaches Docker)`);
    }
    const onDockerApi = networksOf(service).includes(DOCKER_API_NETWORK);
    if (onDockerApi !== [PROXY_SERVICE, ACTIONS_SERVICE].includes(name)) {
      problems.push(`${name}: ${onDockerApi ? 'is' : 'is not'} on network ${DOCKER_API_NETWORK}`);
    }
  }
  const proxy = all[PROXY_SERVICE];
  if (!proxy) return [...problems, `${PROXY_SERVICE}: missing`];
  if (!String(proxy.image).startsWith('tecnativa/docker-socket-proxy:')) problems.push(`${PROXY_SERVICE}: image`);
  const proxyEnv = envOf(proxy);
  for (const [key, value] of Object.entries(proxyEnv)) {
    if (value !== '0' && !['CONTAINERS', 'POST', 'EVENTS'].includes(key)) {
      problems.push(`${PROXY_SERVICE}: ${key}=${value}`);
    }
  }
  // The image grants these by default; they must be turned off explicitly.
  for (const key of ['PING', 'VERSION']) {
    if (proxyEnv[key] !== '0') problems.push(`${PROXY_SERVICE}: ${key} must be 0`);
  }
  // The event stream (read-only) feeds event-driven detection: on, explicitly.
  if (proxyEnv.EVENTS !== '1') problems.push(`${PROXY_SERVICE}: EVENTS must be 1`);
  const networks = (doc.networks ?? {}) as Record<string, { internal?: boolean } | null>;
  if (networks[DOCKER_API_NETWORK]?.internal !== true) problems.push(`network ${DOCKER_API_NETWORK} is not internal`);
  return problems;
}

/** Dependencies exist, one-shot jobs do not restart, long-running services have a healthcheck and a restart policy,
 * named volumes are declared, bind-mounted files exist. */
function structureProblems(doc: Doc): string[] {
  const problems: string[] = [];
  const all = services(doc);
  const oneShots = new Set<string>();
  for (const [name, service] of Object.entries(all)) {
    const deps = (service.depends_on ?? {}) as Record<string, { condition?: string }> | string[];
    const entries: [string, { condition?: string }][] = Array.isArray(deps)
      ? deps.map((d) => [d, {}])
      : Object.entries(deps);
    for (const [dep, spec] of entries) {
      if (!all[dep]) problems.push(`${name}: depends on unknown service ${dep}`);
      if (spec.condition === 'service_completed_successfully') oneShots.add(dep);
      if (spec.condition === 'service_healthy' && all[dep] && !all[dep].healthcheck) {
        problems.push(`${name}: waits for ${dep} to be healthy, which has no healthcheck`);
      }
    }
  }
  const namedVolumes = Object.keys(doc.volumes ?? {});
  for (const [name, service] of Object.entries(all)) {
    const oneShot = oneShots.has(name) || name.endsWith('-pull') || profilesOf(service).includes('cli');
    if (oneShot) {
      if (service.restart !== undefined && service.restart !== 'no') {
        problems.push(`${name}: one-shot job with restart ${JSON.stringify(service.restart)}`);
      }
    } else {
      if (!service.healthcheck) problems.push(`${name}: no healthcheck`);
      if (service.restart === undefined) problems.push(`${name}: no restart policy`);
    }
    for (const source of volumeSources(service)) {
      if (source.startsWith('./')) {
        if (!existsSync(path.resolve(ROOT, source))) problems.push(`${name}: mounts missing ${source}`);
      } else if (!source.startsWith('/') && !namedVolumes.includes(source)) {
        problems.push(`${name}: volume ${source} is not declared`);
      }
    }
  }
  return problems;
}

/** temporal/setup-namespace.sh registers exactly workflows/definitions.ts's SearchAttr, with their types. */
export function searchAttributeProblems(script: string): string[] {
  const m = /^SEARCH_ATTRIBUTES="([^"]*)"/m.exec(script);
  if (!m) return ['setup-namespace.sh: no SEARCH_ATTRIBUTES line'];
  const inScript = new Map(
    m[1]!
      .split(/\s+/)
      .filter(Boolean)
      .map((pair) => pair.split('=') as [string, string]),
  );
  const problems: string[] = [];
  for (const key of Object.values(SearchAttr)) {
    const type = inScript.get(key.name);
    if (type === undefined) problems.push(`${key.name}: not registered`);
    else if (type.toUpperCase() !== key.type) problems.push(`${key.name}: registered as ${type}, is ${key.type}`);
    inScript.delete(key.name);
  }
  for (const name of inScript.keys()) problems.push(`${name}: registered but not in SearchAttr`);
  return problems;
}

/** Server, schema tool and namespace setup come from one Temporal version; the dynamic config file exists. */
function temporalProblems(doc: Doc): string[] {
  const problems: string[] = [];
  const all = services(doc);
  const tag = (ref: unknown) => String(ref).split(':').pop();
  const server = tag(all.temporal?.image);
  for (const name of ['temporal-schema', 'temporal-setup']) {
    const image = String(all[name]?.image);
    if (!image.startsWith('temporalio/admin-tools:')) problems.push(`${name}: not temporalio/admin-tools (${image})`);
    if (tag(image) !== server) problems.push(`${name}: admin-tools ${tag(image)} but server ${server}`);
  }
  for (const service of Object.values(all)) {
    if (String(service.image).startsWith('temporalio/auto-setup')) problems.push('uses the deprecated auto-setup');
  }
  const dynamic = envOf(all.temporal ?? {}).DYNAMIC_CONFIG_FILE_PATH ?? '';
  const local = dynamic.replace('/etc/temporal/config/dynamicconfig/', 'temporal/dynamicconfig/');
  if (!existsSync(path.join(ROOT, local))) problems.push(`DYNAMIC_CONFIG_FILE_PATH ${dynamic}: no ${local}`);
  return problems;
}

// ---- tests ------------------------------------------------------------------------------------------------------

describe('compose interpolation (as docker compose does it)', () => {
  it.each([
    ['${A:-x}', {}, 'x'],
    ['${A:-x}', { A: '' }, 'x'],
    ['${A-x}', { A: '' }, ''],
    ['${A:-x}', { A: 'y' }, 'y'],
    ['$A and $${A}', { A: 'y' }, 'y and ${A}'],
    ['${A:-${B:-z}}', {}, 'z'],
    ['${A:+set}', { A: 'y' }, 'set'],
    ['${A:+set}', {}, ''],
    ['pre-${A:?need A}-post', { A: 'y' }, 'pre-y-post'],
  ])('%s with %j is %s', (text, env: Env, want) => {
    expect(interpolate(text, env)).toBe(want);
  });

  it('a missing required variable is an error naming it', () => {
    expect(() => interpolate('x${A:?set A in .env}', {})).toThrow(/required variable A is missing: set A in \.env/);
  });

  it('the compose file requires exactly the documented secrets, and fails without them', () => {
    const raw = readFileSync(COMPOSE_PATH, 'utf8');
    const required = new Set([...raw.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*):?\?/g)].map((m) => m[1]));
    expect([...required].sort()).toEqual([...REQUIRED_SECRETS].sort());
    expect(() => loadCompose({})).toThrow(/required variable \w+_PASSWORD is missing/);
  });
});

describe('docker-compose.yml: Compose Specification schema', () => {
  it('the shared schema is there (its absence is a failure, not a skip)', () => {
    expect(existsSync(SCHEMA_PATH), `missing ${SCHEMA_PATH}`).toBe(true);
  });

  it('validates, before and after interpolation', () => {
    const validate = schemaValidator();
    expect(validate(readRawCompose())).toEqual([]);
    expect(validate(loadCompose())).toEqual([]);
  });

  it('rejects invalid copies', () => {
    const validate = schemaValidator();
    const doc = loadCompose();
    const typo = clone(doc);
    services(typo).postgres!.imagee = 'postgres:17.6-alpine';
    expect(validate(typo).join('\n')).toMatch(/additional properties/);
    const badDepends = clone(doc);
    services(badDepends)['monitor-agent']!.depends_on = 5;
    expect(validate(badDepends)).not.toEqual([]);
    const badTest = clone(doc);
    (services(badTest).redis!.healthcheck as Record<string, unknown>).test = { cmd: 'ping' };
    expect(validate(badTest)).not.toEqual([]);
  });
});

describe('docker-compose.yml: selfheal environment', () => {
  it('every selfheal service passes core/config.ts, and the non-demo ones set every variable explicitly', () => {
    const doc = loadCompose();
    const built = Object.entries(services(doc)).filter(([, s]) => isBuilt(s));
    expect(built.map(([n]) => n)).toEqual(
      expect.arrayContaining(['monitor-agent', 'healing-agent', 'actions-agent', 'metrics']),
    );
    expect(envProblems(doc)).toEqual([]);
  });

  it('the agents are the compiled entry points of workers/, never run through tsx', () => {
    const all = services(loadCompose());
    for (const [name, file] of [
      ['monitor-agent', 'workers/monitor'],
      ['healing-agent', 'workers/healing'],
      ['actions-agent', 'workers/actions'],
      ['metrics', 'workers/metrics-server'],
    ] as const) {
      expect(all[name]!.command).toEqual(['node', `dist/${file}.js`]);
      expect(existsSync(path.join(ROOT, `${file}.ts`))).toBe(true);
    }
    for (const [name, service] of Object.entries(all)) {
      expect(JSON.stringify([service.command, service.entrypoint]), name).not.toMatch(/tsx|\.ts"/);
    }
  });

  it('compose defaults mean what core/config.ts defaults mean', () => {
    expect(defaultDriftProblems(readRawCompose())).toEqual([]);
  });

  it('finds bad, missing, unknown and drifting variables', () => {
    const doc = loadCompose();
    const bad = clone(doc);
    (services(bad)['monitor-agent']!.environment as Record<string, string>).MONITOR_INTERVAL = 'soon';
    expect(envProblems(bad)).toEqual([expect.stringMatching(/^monitor-agent: MONITOR_INTERVAL: /)]);
    const missing = clone(doc);
    delete (services(missing)['healing-agent']!.environment as Record<string, string>).APPROVAL_TIMEOUT;
    expect(envProblems(missing)).toEqual(['healing-agent: APPROVAL_TIMEOUT is not set explicitly']);
    const unknown = clone(doc);
    (services(unknown)['actions-agent']!.environment as Record<string, string>).MONITOR_INTERVALL = '60';
    expect(envProblems(unknown)).toEqual(['actions-agent: unknown variable MONITOR_INTERVALL']);
    const drift = clone(readRawCompose());
    (services(drift)['monitor-agent']!.environment as Record<string, string>).MONITOR_INTERVAL =
      '${MONITOR_INTERVAL:-30}';
    expect(defaultDriftProblems(drift)).toEqual([
      expect.stringMatching(/^monitor-agent: default of MONITOR_INTERVAL is 30/),
    ]);
  });
});

describe('docker-compose.yml and Dockerfile: pinned images', () => {
  it('every image and every FROM line is pinned to a version', () => {
    expect(pinProblems(loadCompose())).toEqual([]);
  });

  it.each([
    ['postgres:17.6-alpine', true],
    ['registry.example:5000/team/app:1.2.3', true],
    [`node:20@sha256:${'a'.repeat(64)}`, true],
    ['postgres', false],
    ['postgres:latest', false],
    ['postgres:17', false],
    ['redis:7-alpine', false],
    ['registry.example:5000/team/app', false],
    ['selfheal:${TAG}', false],
  ])('%s pinned: %s', (ref, pinned) => {
    expect(imagePinProblem(ref) === undefined).toBe(pinned);
  });

  it('checks Dockerfile FROM lines, stage references and ARG defaults', () => {
    expect(dockerfileProblems('FROM node:20.1.0-slim AS build\nFROM build AS test\nFROM scratch')).toEqual([]);
    expect(dockerfileProblems('ARG BASE=node:20.1.0\nFROM ${BASE}')).toEqual([]);
    expect(dockerfileProblems('FROM node:20 AS build\nFROM --platform=linux/amd64 node')).toHaveLength(2);
    expect(dockerfileProblems('ARG BASE\nFROM $BASE')).toHaveLength(1);
    expect(dockerfileProblems('RUN true')).toEqual(['Dockerfile: no FROM line']);
  });

  it('finds an unpinned image and an unpinned Dockerfile base', () => {
    const doc = loadCompose();
    const latest = clone(doc);
    services(latest).redis!.image = 'redis:latest';
    expect(pinProblems(latest)).toEqual(['redis: redis:latest: latest is not a version']);
    const floating = (p: string) =>
      p.endsWith('Dockerfile') ? 'FROM node:20-bookworm-slim AS build\nFROM build' : readFileSync(p, 'utf8');
    expect(pinProblems(doc, floating)).toEqual([expect.stringMatching(/^Dockerfile: FROM node:20-bookworm-slim/)]);
  });
});

describe('docker-compose.yml: exposure and Docker access', () => {
  it('internal services publish no ports, UIs bind 127.0.0.1, only the proxy holds the socket', () => {
    expect(exposureProblems(loadCompose())).toEqual([]);
  });

  it('SELFHEAL_BIND moves the UIs, and the check notices', () => {
    const open = loadCompose({ ...TEST_ENV, SELFHEAL_BIND: '0.0.0.0' });
    expect(exposureProblems(open)).toHaveLength(UI_SERVICES.size);
  });

  it('finds published internals, open binds, stray Docker access and a wider proxy', () => {
    const doc = loadCompose();
    const cases: [string, (d: Doc) => void, RegExp][] = [
      ['postgres port', (d) => (services(d).postgres!.ports = ['127.0.0.1:5432:5432']), /^postgres: internal service/],
      ['ui on all interfaces', (d) => (services(d)['temporal-ui']!.ports = ['8080:8080']), /every interface/],
      ['long syntax', (d) => (services(d).metrics!.ports = [{ target: 8001, published: 8001 }]), /every interface/],
      [
        'socket in a worker',
        (d) => (services(d)['monitor-agent']!.volumes = ['/var/run/docker.sock:/var/run/docker.sock']),
        /^monitor-agent: mounts the Docker socket/,
      ],
      [
        'DOCKER_HOST in a worker',
        (d) => ((services(d)['healing-agent']!.environment as Env).DOCKER_HOST = 'tcp://docker-socket-proxy:2375'),
        /^healing-agent: has DOCKER_HOST/,
      ],
      [
        'actions straight to the engine',
        (d) => ((services(d)['actions-agent']!.environment as Env).DOCKER_HOST = 'unix:///var/run/docker.sock'),
        /^actions-agent: DOCKER_HOST is unix/,
      ],
      ['exec allowed', (d) => ((services(d)[PROXY_SERVICE]!.environment as Env).EXEC = '1'), /EXEC=1/],
      ['ping by default', (d) => delete (services(d)[PROXY_SERVICE]!.environment as Env).PING, /PING must be 0/],
      ['proxy on default network', (d) => delete services(d)[PROXY_SERVICE]!.networks, /is not on network|is on/],
      [
        'host network',
        (d) => (services(d)['healing-agent']!.network_mode = 'host'),
        /^healing-agent: network_mode "host"/,
      ],
    ];
    for (const [what, mutate, want] of cases) {
      const copy = clone(doc);
      mutate(copy);
      expect(exposureProblems(copy).join('\n'), what).toMatch(want);
    }
  });
});

describe('docker-compose.yml: structure', () => {
  it('dependencies exist, one-shots do not restart, long-running services have healthchecks and restart policies', () => {
    expect(structureProblems(loadCompose())).toEqual([]);
  });

  it('finds a dangling dependency, a missing healthcheck and a restarting one-shot', () => {
    const doc = loadCompose();
    const dangling = clone(doc);
    (services(dangling)['monitor-agent']!.depends_on as Record<string, unknown>).temporl = {
      condition: 'service_healthy',
    };
    expect(structureProblems(dangling).join('\n')).toMatch(/unknown service temporl/);
    const noHealth = clone(doc);
    delete services(noHealth).temporal!.healthcheck;
    expect(structureProblems(noHealth).join('\n')).toMatch(/temporal: no healthcheck|which has no healthcheck/);
    const restarting = clone(doc);
    services(restarting).migrate!.restart = 'unless-stopped';
    expect(structureProblems(restarting)).toEqual(['migrate: one-shot job with restart "unless-stopped"']);
    const volume = clone(doc);
    services(volume).redis!.volumes = ['redis-dat:/data'];
    expect(structureProblems(volume)).toEqual(['redis: volume redis-dat is not declared']);
  });
});

describe('docs/deployment.md: the pipeline HEALTH_TARGETS line', () => {
  it('parses, and names every pipeline worker container with its health URL', () => {
    const docs = readFileSync(path.join(ROOT, 'docs', 'deployment.md'), 'utf8');
    const line = /^HEALTH_TARGETS=(.+)$/m.exec(docs);
    expect(line, 'a HEALTH_TARGETS= line in docs/deployment.md').not.toBeNull();
    const parsed = parseConfig({ HEALTH_TARGETS: line![1] });
    if (!parsed.ok) throw new Error(JSON.stringify(parsed.problems));
    const demo = Object.values(services(loadCompose())).filter((s) => s.container_name !== undefined);
    const port = /--port\s+(\d+)/.exec(String((demo[0]?.entrypoint as string[] | undefined)?.join(' ')))?.[1];
    expect(parsed.config.HEALTH_TARGETS).toEqual(
      demo.map((s) => ({
        container: String(s.container_name),
        url: `http://${String(s.container_name)}:${port}/health`,
      })),
    );
  });
});

describe('temporal/: one Temporal version, namespace setup matches the contract', () => {
  it('admin-tools is the server version, no auto-setup, dynamic config present', () => {
    expect(temporalProblems(loadCompose())).toEqual([]);
    const skewed = clone(loadCompose());
    services(skewed)['temporal-schema']!.image = 'temporalio/admin-tools:1.31.0';
    expect(temporalProblems(skewed)).toEqual([expect.stringMatching(/^temporal-schema: admin-tools 1\.31\.0 but/)]);
  });

  it('setup-namespace.sh registers exactly SearchAttr of workflows/definitions.ts', () => {
    const script = readFileSync(NAMESPACE_SCRIPT, 'utf8');
    expect(searchAttributeProblems(script)).toEqual([]);
    const fewer = script.replace(' HealConfidence=Double', '');
    expect(searchAttributeProblems(fewer)).toEqual(['HealConfidence: not registered']);
    const retyped = script.replace('HealPhase=Keyword', 'HealPhase=Text');
    expect(searchAttributeProblems(retyped)).toEqual(['HealPhase: registered as Text, is KEYWORD']);
  });

  it('the setup scripts are valid POSIX shell', () => {
    for (const file of ['temporal/setup-schema.sh', 'temporal/setup-namespace.sh', 'deploy/postgres/init-roles.sh']) {
      expect(() => execFileSync('sh', ['-n', path.join(ROOT, file)]), file).not.toThrow();
    }
  });
});
