import pino from 'pino';

/** JSON logs on stderr (stdout stays free for command output). */
export function createLogger(name: string, level = process.env.LOG_LEVEL ?? 'info'): pino.Logger {
  return pino({ name, level, base: { pid: process.pid, service: name } }, pino.destination(2));
}
export type Logger = pino.Logger;
