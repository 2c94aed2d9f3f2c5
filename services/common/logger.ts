// One root logger per process; children bind host, jail and generation. Pretty only on a terminal
// (and only where the dev dependency pino-pretty is installed); JSON lines on stderr otherwise.
import { createRequire } from 'node:module';
import { pino, type Logger } from 'pino';

export type { Logger };

function prettyAvailable(): boolean {
  try {
    createRequire(import.meta.url).resolve('pino-pretty');
    return true;
  } catch {
    return false;
  }
}

/** The process's root logger, writing to stderr (stdout belongs to the CLI's output). */
export function createLogger(service: string, bindings: Record<string, unknown> = {}): Logger {
  const level = process.env.JAILFLEET_LOG_LEVEL ?? 'info';
  if (process.stderr.isTTY && prettyAvailable()) {
    return pino({ level, base: { service, ...bindings }, transport: { target: 'pino-pretty', options: { destination: 2 } } });
  }
  return pino({ level, base: { service, ...bindings } }, pino.destination({ dest: 2, sync: false }));
}
