'use strict';
// The JavaScript API: `start()` runs `cofre daemon` as a child of the
// application, for as long as the application runs, and gives it
// `status()`, `runNow()` and `stop()`. Everything else is the binary's:
// this file only starts it, reads its JSON log lines and its exit codes.

const { spawn } = require('node:child_process');
const readline = require('node:readline');
const { EventEmitter } = require('node:events');
const { binaryPath } = require('./binary.js');

/**
 * Every setting cofre reads, as its variable (the binary's `--help` lists
 * the same; a test holds the two together, and index.d.ts to both).
 */
const SETTINGS = [
  'BACKUP_SOURCE',
  'BACKUP_DIR',
  'BACKUP_FULL_EVERY',
  'BACKUP_RETENTION_DAYS',
  'BACKUP_KEEP_LAST',
  'BACKUP_KEEP_DAILY',
  'BACKUP_KEEP_WEEKLY',
  'BACKUP_KEEP_MONTHLY',
  'BACKUP_SCHEDULE',
  'BACKUP_TIMEZONE',
  'MONGODB_URI',
  'BACKUP_MONGODB_URI',
  'BACKUP_MONGODB_URI_FILE',
  'BACKUP_MONGODB_DATABASES',
  'BACKUP_MONGODB_COLLECTIONS',
  'BACKUP_OPLOG',
  'BACKUP_OPLOG_SLICE',
  'BACKUP_EXCLUDE',
  'BACKUP_ENCRYPTION',
  'BACKUP_RECIPIENTS',
  'BACKUP_RECIPIENTS_FILE',
  'BACKUP_PASSPHRASE',
  'BACKUP_PASSPHRASE_FILE',
  'BACKUP_IDENTITY_FILE',
  'BACKUP_SIGNING_KEY_FILE',
  'BACKUP_TRUSTED_KEYS',
  'BACKUP_COMPRESSION',
  'BACKUP_LOG_FILE',
  'BACKUP_LOG_FORMAT',
  'COFRE_DEBUG',
  'BACKUP_CATCH_UP',
  'BACKUP_RETRIES',
  'BACKUP_SHUTDOWN_GRACE',
  'BACKUP_REMOTE',
  'BACKUP_REMOTE_RETENTION_DAYS',
  'BACKUP_REMOTE_LOCK',
  'BACKUP_REMOTE_BANDWIDTH',
  'BACKUP_DRILL_SCHEDULE',
  'BACKUP_DRILL_DIR',
  'BACKUP_DRILL_MONGODB_URI',
  'BACKUP_DRILL_COMMAND',
  'BACKUP_DRILL_TIMEOUT',
  'BACKUP_METRICS_ADDR',
  'BACKUP_METRICS_FILE',
  'BACKUP_NOTIFY_URL',
  'BACKUP_NOTIFY_ON',
  'BACKUP_NOTIFY_TIMEOUT',
  'BACKUP_MIN_FREE',
];

/** The exit codes cofre ends with, by name (the README's table). */
const exitCodes = Object.freeze({ SUCCESS: 0, FAILURE: 1, USAGE: 2, WARNINGS: 3, LOCKED: 11, NO_KEY: 12 });
const CODE_NAMES = Object.fromEntries(Object.entries(exitCodes).map(([k, v]) => [v, k]));

/** Options of `start()` that are not cofre settings. */
const API_OPTIONS = new Set(['onLog', 'logger', 'onError', 'restart', 'cwd', 'binary', 'env']);

/** An error from cofre: its message, and the exit code it ended with. */
class CofreError extends Error {
  constructor(message, exitCode) {
    super(message);
    this.name = 'CofreError';
    this.exitCode = exitCode;
    /** The exit code's name: 'LOCKED' (busy), 'NO_KEY', 'USAGE', 'FAILURE'... */
    this.code = CODE_NAMES[exitCode] || 'FAILURE';
  }
}

/**
 * Turns options into environment variables: `retentionDays` and
 * `BACKUP_RETENTION_DAYS` both mean BACKUP_RETENTION_DAYS; `mongodbUri` is
 * MONGODB_URI; AWS_* pass as they are. Arrays are comma-joined. A key that
 * is no setting (a typo) is refused, naming it, rather than passed on as
 * a variable nothing reads.
 */
function toEnv(options = {}) {
  const env = {};
  for (const [key, value] of Object.entries(options)) {
    if (API_OPTIONS.has(key) || value === undefined || value === null) continue;
    let name = /^[A-Z][A-Z0-9_]*$/.test(key)
      ? key
      : key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();
    const passes = name.startsWith('BACKUP_') || name.startsWith('COFRE_') || name === 'MONGODB_URI';
    if (!passes && !name.startsWith('AWS_')) name = `BACKUP_${name}`;
    if (!name.startsWith('AWS_') && !SETTINGS.includes(name)) {
      throw new CofreError(
        `unknown option ${JSON.stringify(key)}: ${name} is not a cofre setting; ` +
          'see the configuration table in the README (options are its variables, or them in camelCase)',
        exitCodes.USAGE,
      );
    }
    env[name] = Array.isArray(value) ? value.join(',') : String(value);
  }
  return env;
}

/** The `error: ...` line cofre ends with, or the end of what it printed. */
function messageFrom(stderr, code) {
  const lines = stderr.split('\n').filter(Boolean);
  const err = lines.filter((l) => l.startsWith('error: ')).pop();
  if (err) return err.slice('error: '.length);
  for (let i = lines.length - 1; i >= 0; i--) {
    try {
      const e = JSON.parse(lines[i]);
      if (e.level === 'ERROR') return e.fields?.message ?? lines[i];
    } catch {
      // not JSON
    }
  }
  return lines.slice(-3).join('\n') || `cofre exited with code ${code}`;
}

/** Runs the binary once and collects its output. */
function runOnce(bin, args, env, cwd) {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', (e) => reject(new CofreError(`cannot run ${bin}: ${e.message}`, 1)));
    child.on('close', (code, signal) => resolve({ code: code ?? 128, signal, stdout, stderr }));
  });
}

/** One JSON log line of cofre, as the callbacks receive it. */
function parseLine(line) {
  try {
    const raw = JSON.parse(line);
    const { message = '', ...fields } = raw.fields || {};
    return {
      time: raw.timestamp,
      level: String(raw.level || 'INFO').toLowerCase(),
      message,
      fields,
      target: raw.target,
      raw,
    };
  } catch {
    // Lines cofre prints before its logging starts (a bad setting) are text.
    const error = line.startsWith('error: ');
    return {
      time: new Date().toISOString(),
      level: error ? 'error' : 'info',
      message: error ? line.slice('error: '.length) : line,
      fields: {},
      raw: line,
    };
  }
}

const LEVELS = { error: 'error', warn: 'warn', info: 'info', debug: 'debug', trace: 'debug' };

/** The running daemon. Made by `start()`. */
class Backups extends EventEmitter {
  constructor(options = {}) {
    super();
    this._options = options;
    this._bin = options.binary || binaryPath();
    this._cwd = options.cwd || process.cwd();
    this._env = {
      ...process.env,
      BACKUP_LOG_FORMAT: 'json',
      ...(options.env || {}),
      ...toEnv(options),
    };
    this._child = null;
    this._stopping = false;
    this._delay = 1000;
    this._timer = null;
    this._exited = null;
    this.lastError = null;
    this._onSignal = (sig) => {
      this._kill(sig);
      // Only ours: the application had no handler, so it ends as Node
      // would have ended without us (the daemon already has the signal).
      if (process.listenerCount(sig) === 1) {
        this._unhook();
        process.kill(process.pid, sig);
      }
    };
    process.on('SIGTERM', this._onSignal);
    process.on('SIGINT', this._onSignal);
    this._spawn();
  }

  /** The daemon's pid, while it runs. */
  get pid() {
    return this._child ? this._child.pid : undefined;
  }

  _unhook() {
    process.removeListener('SIGTERM', this._onSignal);
    process.removeListener('SIGINT', this._onSignal);
  }

  _kill(sig) {
    if (this._child && this._child.exitCode === null && this._child.signalCode === null) {
      this._child.kill(sig);
    }
  }

  _log(entry) {
    this.emit('log', entry);
    if (this._options.onLog) return this._options.onLog(entry);
    const level = LEVELS[entry.level] || 'info';
    const logger = this._options.logger;
    if (logger && typeof logger[level] === 'function') {
      // pino's and bunyan's shape: fields first, then the message.
      logger[level]({ cofre: true, ...entry.fields }, entry.message);
    } else {
      // The message says what happened; the archive it happened to is a
      // field of its own in the JSON line, so it is added back here.
      const archive = entry.fields && entry.fields.archive;
      const named = archive && !entry.message.includes(archive) ? ` (${archive})` : '';
      console[level](`[cofre] ${entry.message}${named}`);
    }
  }

  _spawn() {
    const started = Date.now();
    const child = spawn(this._bin, ['daemon', '--exit-with-parent'], {
      env: this._env,
      cwd: this._cwd,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    this._child = child;
    let tail = '';
    readline.createInterface({ input: child.stderr }).on('line', (line) => {
      tail = (tail + line + '\n').slice(-8192);
      this._log(parseLine(line));
    });
    this._exited = new Promise((resolve) => {
      child.on('error', (e) => {
        this._fail(new CofreError(`cannot run ${this._bin}: ${e.message}`, 1));
        resolve();
      });
      child.on('close', (code, signal) => {
        this._child = null;
        resolve();
        if (this._stopping) return;
        const error = new CofreError(
          signal ? `the cofre daemon was killed by ${signal}` : messageFrom(tail, code),
          code ?? 128,
        );
        if (code === 2 || this._options.restart === false) {
          // A configuration error: restarting cannot help.
          this._fail(error);
          return;
        }
        if (Date.now() - started > 60_000) this._delay = 1000;
        const delay = this._delay;
        this._delay = Math.min(this._delay * 2, 60_000);
        this.lastError = error;
        this._log({
          time: new Date().toISOString(),
          level: 'warn',
          message: `the cofre daemon stopped (${error.message}); restarting in ${delay / 1000}s`,
          fields: {},
        });
        this.emit('restart', { error, delay });
        this._timer = setTimeout(() => this._spawn(), delay);
        this._timer.unref();
      });
    });
  }

  _fail(error) {
    this.lastError = error;
    this._unhook();
    if (this._options.onError) this._options.onError(error);
    else if (this.listenerCount('error') > 0) this.emit('error', error);
    else this._log({ time: new Date().toISOString(), level: 'error', message: error.message, fields: {} });
  }

  /** `cofre status --json`, parsed. Resolves whether or not the backups are healthy (see `healthy`). */
  async status() {
    const r = await runOnce(this._bin, ['status', '--json'], this._env, this._cwd);
    if (r.code === 0 || r.code === 1) {
      try {
        return JSON.parse(r.stdout);
      } catch {
        // fall through to the error
      }
    }
    throw new CofreError(messageFrom(r.stderr, r.code), r.code);
  }

  /**
   * Runs a backup now (waiting up to `wait`, default 1h, for one in
   * progress). Resolves with the archive's path and whether it had
   * warnings; rejects with a CofreError carrying the exit code.
   */
  async runNow({ wait = '1h' } = {}) {
    // -v: its informational lines (started, finished, the archive) reach
    // the application's log as the daemon's do.
    const r = await runOnce(this._bin, ['backup', '-v', '--wait', wait], this._env, this._cwd);
    for (const line of r.stderr.split('\n').filter(Boolean)) this._log(parseLine(line));
    if (r.code === 0 || r.code === 3) {
      return { archive: r.stdout.trim(), warnings: r.code === 3, exitCode: r.code };
    }
    throw new CofreError(messageFrom(r.stderr, r.code), r.code);
  }

  /** Stops the daemon (SIGTERM: a running backup finishes or cleans up) and waits for it. */
  async stop() {
    this._stopping = true;
    this._unhook();
    if (this._timer) clearTimeout(this._timer);
    this._kill('SIGTERM');
    await this._exited;
  }
}

/** Starts backups for as long as this process runs. */
function start(options) {
  return new Backups(options);
}

module.exports = { start, Backups, CofreError, toEnv, binaryPath, exitCodes, SETTINGS };
