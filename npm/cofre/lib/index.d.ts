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

/** Every setting cofre reads, as its variable. */
export type Setting =
  'BACKUP_SOURCE' |
  'BACKUP_DIR' |
  'BACKUP_FULL_EVERY' |
  'BACKUP_RETENTION_DAYS' |
  'BACKUP_KEEP_LAST' |
  'BACKUP_KEEP_DAILY' |
  'BACKUP_KEEP_WEEKLY' |
  'BACKUP_KEEP_MONTHLY' |
  'BACKUP_SCHEDULE' |
  'BACKUP_TIMEZONE' |
  'MONGODB_URI' |
  'BACKUP_MONGODB_URI' |
  'BACKUP_MONGODB_URI_FILE' |
  'BACKUP_MONGODB_DATABASES' |
  'BACKUP_MONGODB_COLLECTIONS' |
  'BACKUP_OPLOG' |
  'BACKUP_OPLOG_SLICE' |
  'BACKUP_EXCLUDE' |
  'BACKUP_ENCRYPTION' |
  'BACKUP_RECIPIENTS' |
  'BACKUP_RECIPIENTS_FILE' |
  'BACKUP_PASSPHRASE' |
  'BACKUP_PASSPHRASE_FILE' |
  'BACKUP_IDENTITY_FILE' |
  'BACKUP_SIGNING_KEY_FILE' |
  'BACKUP_TRUSTED_KEYS' |
  'BACKUP_COMPRESSION' |
  'BACKUP_LOG_FILE' |
  'BACKUP_LOG_FORMAT' |
  'COFRE_DEBUG' |
  'BACKUP_CATCH_UP' |
  'BACKUP_RETRIES' |
  'BACKUP_SHUTDOWN_GRACE' |
  'BACKUP_REMOTE' |
  'BACKUP_REMOTE_RETENTION_DAYS' |
  'BACKUP_REMOTE_LOCK' |
  'BACKUP_REMOTE_BANDWIDTH' |
  'BACKUP_DRILL_SCHEDULE' |
  'BACKUP_DRILL_DIR' |
  'BACKUP_DRILL_MONGODB_URI' |
  'BACKUP_DRILL_COMMAND' |
  'BACKUP_DRILL_TIMEOUT' |
  'BACKUP_METRICS_ADDR' |
  'BACKUP_METRICS_FILE' |
  'BACKUP_NOTIFY_URL' |
  'BACKUP_NOTIFY_ON' |
  'BACKUP_NOTIFY_TIMEOUT' |
  'BACKUP_MIN_FREE';

/** A setting's value: arrays are comma-joined. */
export type SettingValue = string | number | boolean | string[];

/**
 * cofre's settings, as camelCase keys (`retentionDays`) or as the variables
 * themselves (`BACKUP_RETENTION_DAYS`), and the standard `AWS_*` variables;
 * see the README's configuration table. Any other key is refused.
 */
export interface Options extends Partial<Record<Setting, SettingValue>> {
  /** BACKUP_SOURCE */
  source?: string;
  /** BACKUP_DIR */
  dir?: string;
  /** BACKUP_FULL_EVERY */
  fullEvery?: string;
  /** BACKUP_OPLOG */
  oplog?: string;
  /** BACKUP_OPLOG_SLICE */
  oplogSlice?: string;
  /** BACKUP_RETENTION_DAYS */
  retentionDays?: number | string;
  /** BACKUP_KEEP_LAST */
  keepLast?: number | string;
  /** BACKUP_KEEP_DAILY */
  keepDaily?: number | string;
  /** BACKUP_KEEP_WEEKLY */
  keepWeekly?: number | string;
  /** BACKUP_KEEP_MONTHLY */
  keepMonthly?: number | string;
  /** BACKUP_SCHEDULE */
  schedule?: string;
  /** BACKUP_TIMEZONE */
  timezone?: string;
  /** MONGODB_URI */
  mongodbUri?: string;
  /** BACKUP_MONGODB_URI */
  backupMongodbUri?: string;
  /** BACKUP_MONGODB_URI_FILE */
  mongodbUriFile?: string;
  /** BACKUP_MONGODB_DATABASES */
  mongodbDatabases?: string | string[];
  /** BACKUP_MONGODB_COLLECTIONS */
  mongodbCollections?: string | string[];
  /** BACKUP_EXCLUDE */
  exclude?: string | string[];
  /** BACKUP_ENCRYPTION */
  encryption?: string;
  /** BACKUP_RECIPIENTS */
  recipients?: string | string[];
  /** BACKUP_RECIPIENTS_FILE */
  recipientsFile?: string;
  /** BACKUP_PASSPHRASE */
  passphrase?: string;
  /** BACKUP_PASSPHRASE_FILE */
  passphraseFile?: string;
  /** BACKUP_IDENTITY_FILE */
  identityFile?: string;
  /** BACKUP_SIGNING_KEY_FILE */
  signingKeyFile?: string;
  /** BACKUP_TRUSTED_KEYS */
  trustedKeys?: string | string[];
  /** BACKUP_COMPRESSION */
  compression?: string;
  /** BACKUP_LOG_FILE */
  logFile?: string;
  /** BACKUP_LOG_FORMAT */
  logFormat?: string;
  /** COFRE_DEBUG */
  cofreDebug?: boolean | string;
  /** BACKUP_CATCH_UP */
  catchUp?: boolean | string;
  /** BACKUP_RETRIES */
  retries?: number | string;
  /** BACKUP_SHUTDOWN_GRACE */
  shutdownGrace?: string;
  /** BACKUP_REMOTE */
  remote?: string;
  /** BACKUP_REMOTE_RETENTION_DAYS */
  remoteRetentionDays?: number | string;
  /** BACKUP_REMOTE_LOCK */
  remoteLock?: string;
  /** BACKUP_REMOTE_BANDWIDTH */
  remoteBandwidth?: string;
  /** BACKUP_DRILL_SCHEDULE */
  drillSchedule?: string;
  /** BACKUP_DRILL_DIR */
  drillDir?: string;
  /** BACKUP_DRILL_MONGODB_URI */
  drillMongodbUri?: string;
  /** BACKUP_DRILL_COMMAND */
  drillCommand?: string;
  /** BACKUP_DRILL_TIMEOUT */
  drillTimeout?: string;
  /** BACKUP_METRICS_ADDR */
  metricsAddr?: string;
  /** BACKUP_METRICS_FILE */
  metricsFile?: string;
  /** BACKUP_NOTIFY_URL */
  notifyUrl?: string | string[];
  /** BACKUP_NOTIFY_ON */
  notifyOn?: string | string[];
  /** BACKUP_NOTIFY_TIMEOUT */
  notifyTimeout?: string;
  /** BACKUP_MIN_FREE */
  minFree?: string;
  [aws: `AWS_${string}`]: string | undefined;

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

/** The exit codes cofre ends with (the README's table). */
export const exitCodes: {
  readonly SUCCESS: 0;
  readonly FAILURE: 1;
  readonly USAGE: 2;
  readonly WARNINGS: 3;
  readonly LOCKED: 11;
  readonly NO_KEY: 12;
};

/** Every setting cofre reads. */
export const SETTINGS: readonly Setting[];

/** An error from cofre, with the exit code it ended with and its name. */
export class CofreError extends Error {
  exitCode: number;
  /** `'LOCKED'` (another cofre holds the lock: busy), `'NO_KEY'`, `'USAGE'`, `'FAILURE'`... */
  code: 'SUCCESS' | 'FAILURE' | 'USAGE' | 'WARNINGS' | 'LOCKED' | 'NO_KEY';
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
