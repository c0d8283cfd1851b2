// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import importX, { createNodeResolver } from 'eslint-plugin-import-x';

const ioModules = ['ioredis', 'pg', 'dockerode', 'ollama', 'pino', 'prom-client', 'commander', '@temporalio/*'];
const nodeBuiltins = ['node:*', 'fs', 'child_process', 'http', 'https', 'net', 'os', 'path', 'crypto'];

export default tseslint.config(
  { ignores: ['node_modules/**', '.data/**', '.tools/**', 'coverage/**', 'bin/**', 'dist/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: {
        projectService: { allowDefaultProject: ['*.mjs'] },
        tsconfigRootDir: import.meta.dirname,
      },
    },
    plugins: { 'import-x': importX },
    // Resolve the project's own .ts modules, so that import-x/no-cycle and no-restricted-paths see every import.
    settings: {
      'import-x/resolver-next': [createNodeResolver({ extensions: ['.ts', '.js', '.mjs', '.cjs', '.json'] })],
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true, allowBoolean: true }],
      'import-x/no-cycle': 'error',
    },
  },
  {
    // Layers only point down (docs/ARCHITECTURE.md): core <- activities <- workflows (types of activities only)
    // <- workers <- starter, the CLI on top; pipeline/ (the reference pipeline) sits beside workers, under starter.
    files: ['**/*.ts'],
    rules: {
      'import-x/no-restricted-paths': [
        'error',
        {
          basePath: import.meta.dirname,
          zones: [
            {
              target: './core',
              from: [
                './activities',
                './workflows',
                './workers',
                './starter',
                './pipeline',
                './db',
                './bench',
                './tests',
              ],
              message: 'core/ is the bottom layer: it imports nothing of the project',
            },
            {
              target: './activities',
              from: ['./workflows', './workers', './starter', './pipeline', './bench', './tests'],
              message: 'activities/ may import core/ only',
            },
            {
              target: './workflows',
              from: ['./workers', './starter', './pipeline', './db', './bench', './tests'],
              message: 'workflows/ may import core/, its own definitions, and types of activities/',
            },
            {
              target: './workers',
              from: ['./starter', './pipeline', './bench', './tests'],
              message: 'workers/ may import core/, activities/, workflows/ and db/, never the CLI above it',
            },
            {
              target: './pipeline',
              from: ['./starter', './activities', './workflows', './bench', './tests'],
              message: 'pipeline/ may import core/, db/ and workers/project, never the CLI above it',
            },
          ],
        },
      ],
    },
  },
  {
    // core/ is pure: no I/O, no environment, no clock.
    files: ['core/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [...ioModules, ...nodeBuiltins] }],
      'no-restricted-properties': [
        'error',
        { object: 'process', property: 'env', message: 'core/ takes configuration as arguments' },
        { object: 'Date', property: 'now', message: 'core/ takes `now` as an argument' },
      ],
      'no-restricted-syntax': [
        'error',
        {
          selector: "NewExpression[callee.name='Date'][arguments.length=0]",
          message: 'core/ takes `now` as an argument',
        },
      ],
    },
  },
  {
    // workflows/ only orchestrates: the workflow API, core/, and activity types.
    files: ['workflows/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: ['@temporalio/*', '!@temporalio/workflow', '!@temporalio/common'],
              message: 'workflows import only @temporalio/workflow',
            },
            {
              group: [...ioModules.filter((m) => !m.startsWith('@temporalio')), ...nodeBuiltins],
              message: 'no I/O in workflows',
            },
            {
              group: ['../activities/*', '../../activities/*'],
              allowTypeImports: true,
              message: 'type-only imports of activities',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['tests/**/*.ts', 'bench/**/*.ts'],
    rules: {
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
    },
  },
);
