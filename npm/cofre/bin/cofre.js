#!/usr/bin/env node
'use strict';
// `cofre` from npm scripts and npx: runs the platform's binary with the
// same arguments, standard streams and environment; forwards SIGINT,
// SIGTERM, SIGHUP and SIGQUIT to it; ends with its exit code, or by the
// signal that ended it.

const { spawn } = require('node:child_process');
const { binaryPath } = require('../lib/binary.js');

let bin;
try {
  bin = binaryPath();
} catch (e) {
  process.stderr.write(`error: ${e.message}\n`);
  process.exit(e.exitCode || 1);
}

const child = spawn(bin, process.argv.slice(2), { stdio: 'inherit' });
const signals = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'];
const forward = (sig) => {
  if (child.exitCode === null && child.signalCode === null) child.kill(sig);
};
for (const sig of signals) process.on(sig, forward);

child.on('error', (e) => {
  process.stderr.write(`error: cannot run ${bin}: ${e.message}\n`);
  process.exit(1);
});
child.on('exit', (code, signal) => {
  if (signal) {
    // End the way the binary did, so a caller sees the same signal.
    for (const sig of signals) process.removeListener(sig, forward);
    process.kill(process.pid, signal);
    return;
  }
  process.exit(code === null ? 1 : code);
});
