import assert from 'node:assert/strict';
import { test } from 'node:test';
import { page } from './harness.js';

const HTML = '<div data-offers="cart" data-items="a"></div>';

// Records every cookie the page writes, with its attributes (document.cookie only reads back values).
const cookieSpy = (w) => {
  const proto = Object.getPrototypeOf(w.document);
  let owner = proto;
  while (owner && !Object.getOwnPropertyDescriptor(owner, 'cookie')) owner = Object.getPrototypeOf(owner);
  const real = Object.getOwnPropertyDescriptor(owner, 'cookie');
  w.__cookies = [];
  Object.defineProperty(w.document, 'cookie', {
    configurable: true,
    get: () => real.get.call(w.document),
    set: (v) => (w.__cookies.push(v), real.set.call(w.document, v)),
  });
};

test('offers("visitorId") resolves to the id the snippet sends with requests and events', async () => {
  const t = await page({ html: HTML });
  const vid = await t.w.offers('visitorId');
  assert.match(vid, /^[0-9a-f]{32}$/);
  assert.equal(t.fetches[0].url.searchParams.get('visitor_id'), vid);
  await t.close();
});

test('a visitorId callback queued before the script loads gets the id', async () => {
  const got = [];
  const t = await page({ html: HTML, before: (w) => w.offers('visitorId', (id) => got.push(id)) });
  assert.deepEqual(got, [t.fetches[0].url.searchParams.get('visitor_id')]);
  await t.close();
});

test('the visitor id is written to the first-party offer_vid cookie for a year, Secure on https', async () => {
  const t = await page({ html: HTML, before: cookieSpy });
  const vid = await t.w.offers('visitorId');
  assert.deepEqual(t.w.__cookies, [`offer_vid=${vid};path=/;max-age=31536000;samesite=lax;secure`]);
  assert.equal(t.doc.cookie, `offer_vid=${vid}`);
  await t.close();

  const plain = await page({ html: HTML, url: 'http://localhost:8000/demo/', before: cookieSpy });
  const id = await plain.w.offers('visitorId');
  assert.deepEqual(plain.w.__cookies, [`offer_vid=${id};path=/;max-age=31536000;samesite=lax`], 'no Secure on http');
  await plain.close();
});

test('identify replaces the id in requests, events, the cookie and storage', async () => {
  const t = await page({ html: HTML, before: cookieSpy });
  await t.w.offers('identify', 'cust 42;x');
  assert.equal(await t.w.offers('visitorId'), 'cust 42;x');
  assert.equal(t.w.__cookies.at(-1), 'offer_vid=cust%2042%3Bx;path=/;max-age=31536000;samesite=lax;secure');
  assert.equal(t.w.localStorage.getItem('offers_vid'), 'cust 42;x');
  await t.w.offers('render', t.$('[data-offers]'));
  assert.equal(t.fetches.at(-1).url.searchParams.get('visitor_id'), 'cust 42;x');
  t.doc.addEventListener('click', (e) => e.preventDefault());
  t.$('.offers-link').click();
  t.setHidden(true);
  await new Promise((r) => setTimeout(r, 5));
  const [body] = await t.events();
  assert.equal(body.events[0].visitor_id, 'cust 42;x');
  await t.close();
});

test('an identified visitor stays identified on the next page', async () => {
  const first = await page({ html: HTML });
  await first.w.offers('identify', 'cust-42');
  const stored = first.w.localStorage.getItem('offers_vid');
  await first.close();

  // The next page of the same site starts with the same storage.
  const next = await page({ html: HTML, before: (w) => w.localStorage.setItem('offers_vid', stored), url: 'https://shop.example/cart' });
  assert.equal(next.fetches[0].url.searchParams.get('visitor_id'), 'cust-42');
  assert.equal(next.doc.cookie, 'offer_vid=cust-42');
  await next.close();
});

test('with storage blocked the id lives in memory and nothing is reported', async () => {
  const t = await page({ html: HTML, storageThrows: true });
  const vid = await t.w.offers('visitorId');
  assert.match(vid, /^[0-9a-f]{32}$/);
  assert.equal(t.fetches[0].url.searchParams.get('visitor_id'), vid);
  assert.deepEqual(t.errors, []);
  await t.close();
});
