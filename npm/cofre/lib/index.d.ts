// Types of the cofre package.

import { EventEmitter } from 'node:events';

/** One log line of the daemon (cofre logs JSON; this is it parsed). */
export interface LogEntry {
  time: string;
  level: 'error' | 'warn' | 'info' | 'debug' | string;
  message: string;
  fields: Record<string, unknown>;
  target?: string;
  raw: unknown;
}

/** A logger with pino's shape: `logger.info(fields, message)`. */
export interface Logger {
  error(fields: object, message: string): void;
  warn(fields: object, message: string): void;
  info(fields: object, message: string): void;
  debug?(fields: object, message: string): void;
}

/**
 * cofre's settings, as camelCase keys (`retentionDays`) or as the variables
 * themselves (`BACKUP_RETENTION_DAYS`); see the README's configuration table.
 */
export interface Options {
  source?: string;
  dir?: string;
  schedule?: string;
  retentionDays?: number | string;
  keepLast?: number | string;
  keepDaily?: number | string;
  keepWeekly?: number | string;
  keepMonthly?: number | string;
  timezone?: string;
  mongodbUri?: string;
  mongodbDatabases?: string | string[];
  exclude?: string | string[];
  recipients?: string | string[];
  identityFile?: string;
  compression?: string;
  logFile?: string;
  remote?: string;
  notifyUrl?: string | string[];
  notifyOn?: string | string[];
  metricsAddr?: string;
  metricsFile?: string;
  drillSchedule?: string;
  [variable: string]: unknown;

  /** Receives every log line instead of the logger. */
  onLog?: (entry: LogEntry) => void;
  /** Where log lines go (default: console, prefixed `[cofre]`). */
  logger?: Logger;
  /** Called when the daemon cannot run (a configuration error: exit code 2). */
  onError?: (error: CofreError) => void;
  /** Restart a daemon that died, with backoff (default true). */
  restart?: boolean;
  /** The directory cofre runs in (default: process.cwd()). */
  cwd?: string;
  /** A cofre binary to use instead of the platform package's. */
  binary?: string;
  /** Extra environment for the daemon. */
  env?: Record<string, string>;
}

/** An error from cofre, with the exit code it ended with (1 failure, 2 configuration). */
export class CofreError extends Error {
  exitCode: number;
}

export interface RunResult {
  /** The archive's path. */
  archive: string;
  /** Done with warnings (exit code 3). */
  warnings: boolean;
  exitCode: number;
}

/** The running daemon. */
export class Backups extends EventEmitter {
  readonly pid: number | undefined;
  lastError: CofreError | null;
  /** `cofre status --json`, parsed. */
  status(): Promise<Record<string, any>>;
  /** A backup now. */
  runNow(options?: { wait?: string }): Promise<RunResult>;
  /** Stops the daemon and waits for it. */
  stop(): Promise<void>;
}

/** Starts backups for as long as this process runs. */
export function start(options?: Options): Backups;
/** Options to environment variables. */
export function toEnv(options?: Options): Record<string, string>;
/** The binary's path; throws naming the platform when there is none. */
export function binaryPath(): string;

declare const cofre: {
  start: typeof start;
  Backups: typeof Backups;
  CofreError: typeof CofreError;
  toEnv: typeof toEnv;
  binaryPath: typeof binaryPath;
};
export default cofre;
