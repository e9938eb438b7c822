import { defineConfig } from 'vitest/config';

// Preact's JSX through esbuild's automatic runtime: no Babel, no preset plugin needed.
export default defineConfig({
  esbuild: { jsx: 'automatic', jsxImportSource: 'preact' },
  build: {
    outDir: 'dist',
    // Everything is served by the yuntiao server: no external assets, no inline module preload
    // polyfill (it would need an inline script, which the Content-Security-Policy forbids).
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
  },
  test: { environment: 'node', include: ['src/**/*.test.ts'] },
});
