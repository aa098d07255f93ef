// The ES module entry: the same API as index.js.
import cofre from './index.js';

export const { start, Backups, CofreError, toEnv, binaryPath, exitCodes, SETTINGS } = cofre;
export default cofre;
