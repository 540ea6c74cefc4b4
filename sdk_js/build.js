// Builds the snippet into the Python package, which serves it at /sdk/v1/ (pip users need no Node).
import { copyFileSync, mkdirSync } from 'node:fs';
import { build } from 'esbuild';

export const OUT_DIR = new URL('../offer_service/static/sdk/v1/', import.meta.url);
// One place for the options, so test/build.test.js can check the served file is a fresh build.
export const options = {
  entryPoints: [new URL('src/offers.js', import.meta.url).pathname],
  minify: true,
  target: 'es2017',
  charset: 'utf8',
  legalComments: 'none',
  logLevel: 'warning',
};

if (process.argv[1] === new URL(import.meta.url).pathname) {
  mkdirSync(OUT_DIR, { recursive: true });
  await build({ ...options, outfile: new URL('offers.js', OUT_DIR).pathname });
  copyFileSync(new URL('src/offers.css', import.meta.url), new URL('offers.css', OUT_DIR));
}
