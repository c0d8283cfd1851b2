#!/usr/bin/env node
// Runs the compiled CLI (`npm run build` writes dist/). Development runs the TypeScript sources with
// `npm run selfheal`; what users run is compiled JavaScript, with no TypeScript loader at run time.
'use strict';
const path = require('node:path');
const fs = require('node:fs');

const cli = path.join(__dirname, '..', 'dist', 'starter', 'cli.js');
if (!fs.existsSync(cli)) {
  process.stderr.write('selfheal is not built: run npm run build\n');
  process.exit(1);
}
require(cli).main();
