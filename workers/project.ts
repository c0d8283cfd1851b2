/**
 * Where the project is and how to run one of its scripts, the same whether this code runs compiled (`dist/`, what
 * `selfheal` runs) or from the TypeScript sources (tsx, vitest, `npm run selfheal`): a compiled caller starts the
 * compiled `.js`, a caller running from sources starts the `.ts` through tsx's CommonJS hook.
 */
import { createRequire } from 'node:module';
import path from 'node:path';

/** `.js` when this module is compiled, `.ts` when it runs from the sources. */
const OWN_EXTENSION = path.extname(__filename);

/** Root of the running code: `dist/` when compiled, the repository when running from sources. */
export const CODE_ROOT = path.resolve(__dirname, '..');

/** The repository: `package.json`, `node_modules`, `db/init.sql`, `.data/`, `.tools/`. */
export const PROJECT_ROOT = OWN_EXTENSION === '.ts' ? CODE_ROOT : path.dirname(CODE_ROOT);

/**
 * The file of a project script or module, `name` as in the sources without extension (`workers/monitor`):
 * `<CODE_ROOT>/<name>.js` when compiled, `<CODE_ROOT>/<name>.ts` from sources.
 */
export function projectScript(name: string): string {
  return path.join(CODE_ROOT, `${name}${OWN_EXTENSION}`);
}

/**
 * The command line that runs a script file with this node: tsx's CommonJS hook only for a `.ts` file (one process,
 * no tsx wrapper), plain node for compiled JavaScript.
 */
export function nodeCommand(file: string): [string, ...string[]] {
  if (path.extname(file) !== '.ts') return [process.execPath, file];
  const tsxCjs = createRequire(path.join(PROJECT_ROOT, 'package.json')).resolve('tsx/cjs');
  return [process.execPath, '--require', tsxCjs, file];
}
