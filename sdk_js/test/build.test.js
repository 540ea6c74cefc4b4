import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';
import { options, OUT_DIR } from '../build.js';
import { BUILT, SOURCE } from './harness.js';

const BUDGET = 3584; // 3.5 KB gzipped: see README.md, "Size budget"

test('the snippet fits the size budget (gzip -9 <= 3.5 KB)', (t) => {
  const raw = readFileSync(BUILT);
  const gz = gzipSync(raw, { level: 9 }).length;
  const msg = `offers.js: ${raw.length} bytes minified, ${gz} bytes gzipped (budget ${BUDGET})`;
  t.diagnostic(msg);
  console.log(msg);
  assert.ok(gz <= BUDGET, msg);
});

test('the served file is a fresh build of src/ (run `npm run build` after editing)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'offers-build-'));
  try {
    const out = join(dir, 'offers.js');
    await build({ ...options, outfile: out });
    assert.equal(readFileSync(BUILT, 'utf8'), readFileSync(out, 'utf8'), 'offer_service/static/sdk/v1/offers.js is stale');
    assert.equal(
      readFileSync(new URL('offers.css', OUT_DIR), 'utf8'),
      readFileSync(new URL('../src/offers.css', import.meta.url), 'utf8'),
      'offer_service/static/sdk/v1/offers.css is stale'
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the source keeps the snippet rules: no innerHTML, eval, inline styles or globals but one', () => {
  const src = readFileSync(SOURCE, 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
  for (const banned of ['innerHTML', 'outerHTML', 'insertAdjacentHTML', 'document.write', 'eval(', 'new Function', '.style', "'style'", 'setAttribute("style"']) {
    assert.equal(src.includes(banned), false, `src/offers.js uses ${banned}`);
  }
  const built = readFileSync(BUILT, 'utf8');
  assert.match(built, /^\(\(\)=>\{[\s\S]*\}\)\(\);\n?$/, 'one IIFE');
  assert.equal(built.match(/\b\w+\.offers=/g).length, 1, "one global");
});

test('the stylesheet only defines offers- classes', () => {
  const css = readFileSync(new URL('../src/offers.css', import.meta.url), 'utf8').replace(/\/\*[\s\S]*?\*\//g, '');
  const classes = new Set(css.match(/\.[a-z][\w-]*(?=[^}]*\{)/g).filter((c) => !/^\.\d/.test(c)));
  for (const c of classes) assert.match(c, /^\.offers-/);
  for (const prop of ['--offers-accent', '--offers-radius', '--offers-font']) assert.ok(css.includes(prop), prop);
});

test('the README documents the SRI hashes of the current build', () => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  for (const name of ['offers.js', 'offers.css']) {
    const sri = 'sha384-' + createHash('sha384').update(readFileSync(new URL(name, OUT_DIR))).digest('base64');
    assert.ok(readme.includes(`integrity="${sri}"`), `README.md: set the integrity of ${name} to ${sri}`);
  }
});
