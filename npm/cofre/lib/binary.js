'use strict';
// Finds the cofre binary: COFRE_BINARY when set, else the one in the
// platform package npm installed beside this one (cofre-<os>-<cpu>, chosen
// by npm through optionalDependencies and each package's `os`/`cpu`).

const path = require('node:path');
const fs = require('node:fs');

/** The platform packages that exist; a new platform adds its name here and a directory in npm/platforms. */
const PLATFORMS = ['linux-x64'];

function platformKey() {
  return `${process.platform}-${process.arch}`;
}

/**
 * The path of the cofre binary.
 * @throws {Error} naming the platform when no binary is installed for it.
 */
function binaryPath() {
  const override = process.env.COFRE_BINARY;
  if (override) return override;
  const key = platformKey();
  const pkg = `cofre-${key}`;
  try {
    return require.resolve(`${pkg}/bin/cofre`);
  } catch {
    // Fall through to a clear message.
  }
  const supported = PLATFORMS.includes(key);
  const err = new Error(
    supported
      ? `cofre: the binary for ${key} is missing: the package ${pkg} is not installed ` +
          `(was it installed with --omit=optional or --no-optional?). Reinstall with ` +
          `\`npm install cofre ${pkg}\`, or set COFRE_BINARY to a cofre binary.`
      : `cofre: there is no cofre binary for ${key} (platforms with one: ${PLATFORMS.join(', ')}). ` +
          `Build it from source (cargo build --release) and set COFRE_BINARY to its path.`,
  );
  err.code = 'COFRE_NO_BINARY';
  err.exitCode = 1;
  throw err;
}

/** Whether a file exists and is executable. */
function usable(p) {
  try {
    fs.accessSync(p, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

module.exports = { binaryPath, platformKey, usable, PLATFORMS, path };
