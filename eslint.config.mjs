// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import importX from 'eslint-plugin-import-x';

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
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true, allowBoolean: true }],
      'import-x/no-cycle': 'error',
    },
  },
  {
    // core/ is pure: no I/O, no environment, no clock.
    files: ['core/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        { patterns: [...ioModules, ...nodeBuiltins, '../activities/*', '../workers/*', '../starter/*', '../db/*'] },
      ],
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
              group: ['../activities/*', '../workers/*', '../starter/*', '../db/*', '../pipeline/*'],
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
