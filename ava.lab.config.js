// Lab tests: root only, real namespaces, wireguard-go, nftables, podman. Run one file at a time.
export default {
  files: ['test/lab/**/*.test.ts'],
  extensions: { ts: 'module' },
  nodeArguments: ['--import=tsx'],
  concurrency: 1,
  serial: true,
  workerThreads: false,
  timeout: '5m',
};
