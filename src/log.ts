import { type Logger, pino } from 'pino';

/** JSON logs to stdout (pino). Session open/close at info; nothing per packet above debug. */
export function createLogger(level: string): Logger {
  return pino({ level, base: { name: 'ice-ingress' } });
}
