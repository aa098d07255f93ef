'use strict';
// The npm packages, as a Node.js application gets them: packed with
// npm/build.sh, installed from the two tarballs into a sample application
// with no Rust toolchain on PATH, then driven through `npm run`, `npx`,
// the bin wrapper and the JavaScript API.
//
// COFRE_NPM_BINARY names the binary to pack (scripts/test passes the test
// build's); without it, npm/build.sh --debug builds one.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const crypto = require('node:crypto');

const root = path.resolve(__dirname, '..', '..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cofre-npm-'));
const app = path.join(tmp, 'app');
const home = path.join(tmp, 'home');
// What the application's commands see: node and the system, no cargo.
const PATH = [path.dirname(process.execPath), '/usr/local/bin', '/usr/bin', '/bin'].join(':');
const env = {
  ...Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith('BACKUP_') && k !== 'MONGODB_URI'),
  ),
  PATH,
  HOME: home,
  npm_config_cache: path.join(tmp, 'npm-cache'),
  npm_config_update_notifier: 'false',
  npm_config_fund: 'false',
  npm_config_audit: 'false',
  // Everything comes from the two tarballs: no registry.
  npm_config_offline: 'true',
};

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { cwd: app, env, encoding: 'utf8', ...opts });
  if (r.error) throw r.error;
  return r;
}

function ok(cmd, args, opts) {
  const r = run(cmd, args, opts);
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}:\n${r.stdout}\n${r.stderr}`);
  return r;
}

let tarballs;

before(() => {
  fs.mkdirSync(app, { recursive: true });
  fs.mkdirSync(home, { recursive: true });
  const args = [path.join(root, 'npm', 'build.sh')];
  if (process.env.COFRE_NPM_BINARY) args.push('--binary', process.env.COFRE_NPM_BINARY);
  else args.push('--debug');
  args.push(path.join(tmp, 'packages'));
  const built = spawnSync('bash', args, { encoding: 'utf8', env: process.env });
  assert.equal(built.status, 0, built.stderr);
  tarballs = built.stdout.trim().split('\n');
  assert.equal(tarballs.length, 2, built.stdout);
  assert.match(path.basename(tarballs[0]), /^cofre-linux-x64-\d+\.\d+\.\d+\.tgz$/);
  assert.match(path.basename(tarballs[1]), /^cofre-\d+\.\d+\.\d+\.tgz$/);

  // The sample application.
  fs.writeFileSync(
    path.join(app, 'package.json'),
    JSON.stringify(
      {
        name: 'sample-app',
        version: '1.0.0',
        private: true,
        scripts: { backup: 'cofre backup', restore: 'cofre restore' },
      },
      null,
      2,
    ),
  );
  fs.mkdirSync(path.join(app, 'src', 'routes'), { recursive: true });
  fs.writeFileSync(path.join(app, 'src', 'index.js'), "require('http').createServer().listen(0);\n");
  fs.writeFileSync(path.join(app, 'src', 'routes', 'users.js'), 'module.exports = {};\n');
  fs.mkdirSync(path.join(app, 'uploads'));
  fs.writeFileSync(path.join(app, 'uploads', 'photo.bin'), crypto.randomBytes(300_000));
  fs.writeFileSync(path.join(app, 'uploads', 'name with spaces é.txt'), 'awkward\n');

  assert.equal(spawnSync('cargo', ['--version'], { env }).error?.code, 'ENOENT', 'cargo must not be on PATH');
  ok('npm', ['install', '--no-save', ...tarballs]);
  assert.ok(fs.existsSync(path.join(app, 'node_modules', 'cofre-linux-x64', 'bin', 'cofre')));
});

after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** Every file under `dir` (relative path -> sha256), leaving out `skip`. */
function tree(dir, skip) {
  const out = {};
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      const rel = path.relative(dir, p);
      if (skip.includes(rel)) continue;
      if (e.isDirectory()) walk(p);
      else out[rel] = crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex');
    }
  };
  walk(dir);
  return out;
}

/** Waits until `pred()` holds, up to `ms`. */
async function until(pred, ms, what) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test('npm run backup writes an archive and npm run restore restores it identically', () => {
  const backup = ok('npm', ['run', '--silent', 'backup']);
  const archive = backup.stdout.trim().split('\n').pop();
  assert.match(path.basename(archive), /^backup_.*\.tar\.gz\.age$/);
  assert.ok(fs.existsSync(archive), archive);
  assert.equal(path.dirname(archive), path.join(app, 'backups'));
  const to = path.join(tmp, 'restored');
  ok('npm', ['run', '--silent', 'restore', '--', 'latest', '--to', to]);
  const skip = ['node_modules', 'backups'];
  const want = tree(app, skip);
  assert.ok(Object.keys(want).length >= 5);
  assert.deepEqual(tree(to, skip), want);
});

test('npx cofre passes arguments, output and exit codes through', () => {
  const status = ok('npx', ['--no-install', 'cofre', 'status', '--json']);
  const parsed = JSON.parse(status.stdout);
  assert.ok(parsed.last_success.archive.startsWith('backup_'));
  const missing = run('npx', ['--no-install', 'cofre', 'restore', 'no-such.tar.gz.age', '--to', path.join(tmp, 'x')]);
  assert.equal(missing.status, 1, missing.stderr);
  assert.match(missing.stderr, /^error: .*no-such/m);
  const usage = run('npx', ['--no-install', 'cofre', '--no-such-flag']);
  assert.equal(usage.status, 2, usage.stderr);
});

test('a signal to the cofre command reaches the binary', async () => {
  const bin = path.join(app, 'node_modules', '.bin', 'cofre');
  const child = spawn(bin, ['daemon'], {
    cwd: app,
    env: { ...env, BACKUP_SCHEDULE: '0 0 1 1 *', BACKUP_DRILL_SCHEDULE: 'off' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  await until(() => err.includes('daemon started'), 20_000, 'the daemon to start');
  const exited = new Promise((r) => child.on('exit', (code, signal) => r({ code, signal })));
  child.kill('SIGTERM');
  const { code } = await exited;
  assert.equal(code, 0, err);
  assert.match(err, /SIGTERM received, stopping/);
  assert.match(err, /daemon stopped/);
});

/** The package as the application requires it. */
function cofre() {
  return require(path.join(app, 'node_modules', 'cofre'));
}

test('start() backs up on a seconds schedule while the application serves; status() and runNow() say what the CLI says', async () => {
  const http = require('node:http');
  const server = http.createServer((_req, res) => res.end('hello from the app'));
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const logs = [];
  const backupsDir = path.join(app, 'backups');
  const before = fs.readdirSync(backupsDir).filter((n) => n.endsWith('.age')).length;
  const backups = cofre().start({
    schedule: '*/2 * * * * *',
    catchUp: false,
    BACKUP_DRILL_SCHEDULE: 'off',
    cwd: app,
    env: { HOME: home },
    onLog: (e) => logs.push(e),
  });
  const cli = (...args) => ok(path.join(app, 'node_modules', '.bin', 'cofre'), args).stdout;
  try {
    await until(
      () => logs.filter((l) => l.message.includes('scheduled backup done')).length >= 2,
      30_000,
      'two scheduled backups',
    );
    // The application kept serving meanwhile.
    const res = await fetch(`http://127.0.0.1:${server.address().port}/`);
    assert.equal(await res.text(), 'hello from the app');
    const made = fs.readdirSync(backupsDir).filter((n) => n.endsWith('.age')).length;
    assert.ok(made >= before + 2, `${made} archives, ${before} before`);
    const started = logs.find((l) => l.message.includes('daemon started'));
    assert.equal(started.level, 'info');
    assert.equal(started.fields.schedule, '*/2 * * * * *');
    const pid = backups.pid;
    assert.ok(alive(pid));
    assert.equal((await backups.status()).daemon_running, true);

    await backups.stop();
    assert.equal(alive(pid), false);
    assert.ok(logs.some((l) => l.message.includes('daemon stopped')));

    // With the daemon stopped nothing changes between the two readings.
    const status = await backups.status();
    const fromCli = JSON.parse(cli('status', '--json'));
    for (const key of ['last_success', 'archives', 'archives_bytes', 'daemon_running', 'healthy']) {
      assert.deepEqual(status[key], fromCli[key], key);
    }
    const done = await backups.runNow();
    assert.ok(fs.existsSync(done.archive), done.archive);
    assert.equal(done.warnings, false);
    const newest = JSON.parse(cli('list', '--json'))[0];
    assert.equal(newest.path, done.archive);
    assert.equal(newest.signature, 'trusted');
  } finally {
    await backups.stop();
    server.close();
  }
});

test('the ES module import has the same API', () => {
  const r = ok(process.execPath, [
    '--input-type=module',
    '-e',
    "import cofre, { start, CofreError } from 'cofre'; console.log(typeof start, typeof CofreError, cofre.start === start);",
  ]);
  assert.equal(r.stdout.trim(), 'function function true');
});

/** Runs `script` in a Node process of the application; resolves with the daemon's pid it prints. */
function appProcess(script) {
  const child = spawn(process.execPath, ['-e', script], { cwd: app, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  const pid = until(() => /PID \d+/.test(out), 20_000, 'the daemon pid').then(
    () => Number(out.match(/PID (\d+)/)[1]),
    (e) => {
      throw new Error(`${e.message}\n${out}\n${err}`);
    },
  );
  const exited = new Promise((r) => child.on('exit', (code, signal) => r({ code, signal })));
  return { child, pid, exited };
}

const startAndPrint = `
  const b = require('cofre').start({ schedule: '0 0 1 1 *', drillSchedule: 'off', onLog: (e) => {
    if (e.message.includes('daemon started')) console.log('PID ' + b.pid);
  } });
  setInterval(() => {}, 1000);
`;

test('the daemon ends with the application, even when it is killed with SIGKILL', async () => {
  const p = appProcess(startAndPrint);
  const pid = await p.pid;
  assert.ok(alive(pid));
  p.child.kill('SIGKILL');
  await p.exited;
  await until(() => !alive(pid), 10_000, 'the orphaned daemon to stop');
});

test("SIGTERM to the application reaches the daemon, and the application still ends as Node's default", async () => {
  const p = appProcess(startAndPrint);
  const pid = await p.pid;
  p.child.kill('SIGTERM');
  const { signal } = await p.exited;
  assert.equal(signal, 'SIGTERM');
  await until(() => !alive(pid), 10_000, 'the daemon to stop');
});

test('console lines name the archive they are about', async () => {
  const p = appProcess(`
    const b = require('cofre').start({ schedule: '0 0 1 1 *', drillSchedule: 'off' });
    b.runNow().then((r) => { console.log('DONE ' + r.archive); return b.stop(); }).then(() => process.exit(0));
  `);
  p.pid.catch(() => {}); // this script prints no pid
  let out = '';
  p.child.stdout.on('data', (d) => (out += d));
  const { code } = await p.exited;
  assert.equal(code, 0, out);
  const archive = path.basename(out.match(/DONE (\S+)/)[1]);
  const finished = out.split('\n').find((l) => l.startsWith('[cofre] backup finished'));
  assert.ok(finished && finished.includes(archive), out);
});

test('a daemon that dies is restarted, with backoff', async () => {
  const logs = [];
  const restarts = [];
  const backups = cofre().start({
    schedule: '0 0 1 1 *',
    drillSchedule: 'off',
    cwd: app,
    env: { HOME: home },
    onLog: (e) => logs.push(e),
  });
  backups.on('restart', (r) => restarts.push(r));
  try {
    await until(() => logs.some((l) => l.message.includes('daemon started')), 20_000, 'the daemon');
    const first = backups.pid;
    process.kill(first, 'SIGKILL');
    await until(() => restarts.length === 1, 10_000, 'the restart');
    assert.equal(restarts[0].delay, 1000);
    assert.match(restarts[0].error.message, /killed by SIGKILL/);
    await until(() => logs.filter((l) => l.message.includes('daemon started')).length === 2, 20_000, 'the new daemon');
    assert.notEqual(backups.pid, first);
    assert.ok(alive(backups.pid));
  } finally {
    await backups.stop();
  }
});

test("errors are Error objects with cofre's message and exit code", async () => {
  const errors = [];
  const backups = cofre().start({ retentionDays: 'soon', cwd: app, env: { HOME: home }, onError: (e) => errors.push(e) });
  await until(() => errors.length === 1, 20_000, 'the error');
  const { CofreError } = cofre();
  assert.ok(errors[0] instanceof CofreError);
  assert.ok(errors[0] instanceof Error);
  assert.equal(errors[0].exitCode, 2);
  assert.match(errors[0].message, /invalid BACKUP_RETENTION_DAYS value "soon"/);
  await assert.rejects(backups.runNow(), (e) => e.exitCode === 2 && /BACKUP_RETENTION_DAYS/.test(e.message));
  await backups.stop();
});

test('a missing platform binary gets a message naming the platform', () => {
  const bare = path.join(tmp, 'bare-app');
  fs.mkdirSync(bare);
  fs.writeFileSync(path.join(bare, 'package.json'), '{"name":"bare","version":"1.0.0","private":true}');
  ok('npm', ['install', '--no-save', '--omit=optional', tarballs[1]], { cwd: bare });
  assert.ok(!fs.existsSync(path.join(bare, 'node_modules', 'cofre-linux-x64')));
  const r = run(path.join(bare, 'node_modules', '.bin', 'cofre'), ['status'], { cwd: bare });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /the binary for linux-x64 is missing: the package cofre-linux-x64 is not installed/);
  const api = spawnSync(process.execPath, ['-e', "try { require('cofre').start() } catch (e) { console.log(e.code, e.message) }"], {
    cwd: bare,
    env,
    encoding: 'utf8',
  });
  assert.match(api.stdout, /^COFRE_NO_BINARY cofre: the binary for linux-x64 is missing/);
});

test('every setting the binary reads is in the JavaScript list and the types; a typo is refused', () => {
  const bin = path.join(app, 'node_modules', 'cofre-linux-x64', 'bin', 'cofre');
  const help = ok(bin, ['--help']).stdout;
  const fromBinary = [...help.matchAll(/^ {2}([A-Z][A-Z0-9_]+)(?: \(--[a-z-]+\))?$/gm)].map((m) => m[1]).sort();
  assert.ok(fromBinary.length >= 40, help);
  const { SETTINGS, toEnv, CofreError, exitCodes } = cofre();
  assert.deepEqual([...SETTINGS].sort(), fromBinary);
  const types = fs.readFileSync(path.join(app, 'node_modules', 'cofre', 'lib', 'index.d.ts'), 'utf8');
  for (const name of fromBinary) {
    assert.ok(types.includes(`'${name}'`) && types.includes(`/** ${name} */`), `${name} is not in index.d.ts`);
  }
  // Each camelCase key the types name maps to its variable.
  for (const [, name, key] of types.matchAll(/\/\*\* ([A-Z][A-Z0-9_]+) \*\/\n {2}(\w+)\?/g)) {
    assert.deepEqual(Object.keys(toEnv({ [key]: '1' })), [name], key);
  }
  assert.deepEqual(toEnv({ retentionDays: 3, AWS_REGION: 'eu-west-1', exclude: ['a', 'b'] }), {
    BACKUP_RETENTION_DAYS: '3',
    AWS_REGION: 'eu-west-1',
    BACKUP_EXCLUDE: 'a,b',
  });
  assert.throws(
    () => toEnv({ retentionDayz: 3 }),
    (e) => e instanceof CofreError && e.code === 'USAGE' && e.exitCode === exitCodes.USAGE && /retentionDayz/.test(e.message),
  );
  assert.equal(new CofreError('busy', 11).code, 'LOCKED');
  assert.equal(new CofreError('no key', 12).code, 'NO_KEY');
});
