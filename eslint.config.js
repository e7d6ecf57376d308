import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'test/golden/', 'vagrant/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      'no-console': 'off',
      eqeqeq: ['error', 'always'],
    },
  },
  {
    // The coordinator, agent and gateway depend on src/shared only, never on each other.
    files: ['src/coordinator/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: ['**/node-agent/**', '**/gateway/**', '**/cli/**'] }] },
  },
  {
    files: ['src/node-agent/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: ['**/coordinator/**', '**/gateway/**', '**/cli/**'] }] },
  },
  {
    files: ['src/gateway/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: ['**/coordinator/**', '**/node-agent/**', '**/cli/**'] }] },
  },
  {
    files: ['src/cli/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: ['**/coordinator/**', '**/node-agent/**', '**/gateway/**'] }] },
  },
  {
    files: ['src/shared/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: ['**/coordinator/**', '**/node-agent/**', '**/gateway/**', '**/cli/**'] }] },
  },
);
