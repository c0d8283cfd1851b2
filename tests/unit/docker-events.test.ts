import { PassThrough } from 'node:stream';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { eventMeaning, jsonLines, reconnectDelayMs, type DockerEventMessage } from '../../core/docker-events';
import { StopRecords } from '../../activities/docker-stops';
import { createKeys } from '../../core/keys';
import { startDockerEventWatcher } from '../../workers/docker-events';

const NOW = 1_750_000_000_000;
const ev = (Action: string, attrs: Record<string, string> = {}): DockerEventMessage => ({
  Type: 'container',
  Action,
  Actor: { ID: 'abc', Attributes: { name: 'web-1', ...attrs } },
  time: 1_750_000_000,
  timeNano: 1_750_000_000_123_000_000,
});

describe('what a Docker event means for detection', () => {
  it('a death, an OOM kill or an unhealthy HEALTHCHECK: detect now', () => {
    expect(eventMeaning(ev('die', { exitCode: '137' }), NOW)).toEqual({
      kind: 'detect',
      name: 'web-1',
      why: 'died (exit code 137)',
    });
    expect(eventMeaning(ev('oom'), NOW)).toMatchObject({ kind: 'detect', why: 'out of memory' });
    expect(eventMeaning(ev('health_status: unhealthy'), NOW)).toMatchObject({ kind: 'detect' });
    expect(eventMeaning(ev('health_status: healthy'), NOW)).toEqual({ kind: 'ignore' });
    expect(eventMeaning(ev('health_status: starting'), NOW)).toEqual({ kind: 'ignore' });
  });

  it('docker stop, or a kill with SIGTERM or SIGINT: stopped on purpose; a SIGKILL is not', () => {
    expect(eventMeaning(ev('stop'), NOW)).toEqual({
      kind: 'stopped',
      name: 'web-1',
      stop: { at: 1_750_000_000_123, how: 'docker stop' },
    });
    expect(eventMeaning(ev('kill', { signal: '15' }), NOW)).toMatchObject({
      kind: 'stopped',
      stop: { how: 'docker kill with signal 15' },
    });
    expect(eventMeaning(ev('kill', { signal: 'SIGINT' }), NOW)).toMatchObject({ kind: 'stopped' });
    expect(eventMeaning(ev('kill', { signal: '9' }), NOW)).toEqual({ kind: 'ignore' });
    expect(eventMeaning(ev('start'), NOW)).toEqual({ kind: 'started', name: 'web-1' });
    expect(eventMeaning(ev('destroy'), NOW)).toEqual({ kind: 'removed', name: 'web-1' });
  });

  it('other types, and events without a name, are ignored', () => {
    expect(eventMeaning({ ...ev('die'), Type: 'network' }, NOW)).toEqual({ kind: 'ignore' });
    expect(eventMeaning({ Type: 'container', Action: 'die' }, NOW)).toEqual({ kind: 'ignore' });
  });

  it('reconnects after 0.5 s, doubling to 30 s', () => {
    expect([1, 2, 3, 6, 7, 20].map(reconnectDelayMs)).toEqual([500, 1_000, 2_000, 16_000, 30_000, 30_000]);
  });
});

describe('the event watcher (the stream replaced by a PassThrough: a drop cannot be ordered from the engine)', () => {
  it('records stops, clears them on start, triggers cycles, and after a drop reconnects from the last event', async () => {
    const keys = createKeys('t:');
    const hash = new Map<string, string>();
    const redis = {
      hset: (_k: string, ...pairs: string[]) => {
        for (let i = 0; i + 1 < pairs.length; i += 2) hash.set(pairs[i]!, pairs[i + 1]!);
        return Promise.resolve(pairs.length / 2);
      },
      hdel: (_k: string, field: string) => Promise.resolve(hash.delete(field) ? 1 : 0),
      hgetall: () => Promise.resolve(Object.fromEntries(hash)),
    };
    const streams: PassThrough[] = [];
    const calls: Record<string, unknown>[] = [];
    const docker = {
      getEvents: (opts: Record<string, unknown>) => {
        calls.push(opts);
        const s = new PassThrough();
        streams.push(s);
        return Promise.resolve(s);
      },
    };
    const triggers: string[] = [];
    const watcher = startDockerEventWatcher({
      docker: docker as never,
      stops: new StopRecords(redis as never, keys),
      labels: ['selfheal.prefix=t:'],
      trigger: (why) => Promise.resolve(void triggers.push(why)),
      log: pino({ level: 'silent' }),
    });
    const until = async (cond: () => boolean) => {
      for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
      expect(cond()).toBe(true);
    };
    await until(() => streams.length === 1);
    expect(calls[0]).toEqual({
      filters: {
        type: ['container'],
        event: ['health_status', 'die', 'start', 'stop', 'kill', 'oom', 'destroy'],
        label: ['selfheal.prefix=t:'],
      },
    });
    // Split across chunks, as the engine may send it.
    const line = (e: DockerEventMessage) => `${JSON.stringify(e)}\n`;
    const stop = line(ev('kill', { signal: '15' }));
    streams[0]!.write(stop.slice(0, 10));
    streams[0]!.write(stop.slice(10) + line(ev('die', { exitCode: '143' })));
    await until(() => hash.has('web-1') && triggers.length === 1);
    expect(JSON.parse(hash.get('web-1')!)).toEqual({ at: 1_750_000_000_123, how: 'docker kill with signal 15' });
    expect(triggers).toEqual(['web-1 died (exit code 143)']);
    streams[0]!.write(line({ ...ev('start'), time: 1_750_000_005 }));
    await until(() => !hash.has('web-1'));
    // Stopped again, then removed: the record goes with the container.
    streams[0]!.write(line({ ...ev('stop'), time: 1_750_000_005 }));
    await until(() => hash.has('web-1'));
    streams[0]!.write(line({ ...ev('destroy'), time: 1_750_000_005 }));
    await until(() => !hash.has('web-1'));

    // The stream drops: it reconnects, replaying from the last event's second, and looks at once.
    streams[0]!.end();
    await until(() => streams.length === 2);
    expect(calls[1]).toMatchObject({ since: 1_750_000_005 });
    await until(() => triggers.includes('event stream reconnected'));
    expect(watcher.stats()).toMatchObject({ events: 5, reconnects: 1, connected: true });
    await watcher.stop();
    expect(watcher.stats().connected).toBe(false);
  });
});

describe('the JSON lines of the event stream', () => {
  it('splits messages across chunks, skips blank and broken lines, and decodes a character split between chunks', () => {
    const got: unknown[] = [];
    const feed = jsonLines((m) => got.push(m));
    const bytes = Buffer.from('{"name":"wörker-é"}\n\nnot json\n{"a":1}\n{"b"', 'utf8');
    // Cut inside the two-byte "ö".
    const cut = bytes.indexOf(Buffer.from('ö', 'utf8')) + 1;
    feed(bytes.subarray(0, cut));
    feed(bytes.subarray(cut));
    expect(got).toEqual([{ name: 'wörker-é' }, { a: 1 }]);
    feed(':2}\n');
    expect(got).toEqual([{ name: 'wörker-é' }, { a: 1 }, { b: 2 }]);
  });
});
