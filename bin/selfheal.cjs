#!/usr/bin/env node
// Runs the TypeScript CLI through tsx so that `npx selfheal` works without a build step.
require('tsx/cjs');
require('../starter/cli.ts').main();
