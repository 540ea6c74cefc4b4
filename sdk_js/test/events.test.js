import assert from 'node:assert/strict';
import { test } from 'node:test';
import { offer, page, reply } from './harness.js';

const HTML = '<div data-offers="cart" data-items="a"></div>';

// Clicks on the offer link; the test page cancels navigation like a router would.
const clicks = (t, n) => {
  t.doc.addEventListener('click', (e) => e.preventDefault());
  const a = t.$('.offers-link');
  for (let i = 0; i < n; i++) a.click();
};

test('a click on the offer link is queued as a well-formed event', async () => {
  const got = [];
  const t = await page({ html: HTML, clock: true, before: (w) => w.offers('on', 'click', (d) => got.push(d)) });
  clicks(t, 1);
  assert.equal(t.beacons.length, 0, 'not sent at once');
  assert.equal(got.length, 1);
  assert.equal(got[0].offer.offer_id, 'off_1');
  await t.clock.tick(5000);
  assert.equal(t.beacons.length, 1, 'sent by the timer');
  assert.equal(t.beacons[0].url, 'https://api.example/v1/events');
  assert.equal(t.beacons[0].blob.type, 'text/plain');
  const [body] = await t.events();
  assert.equal(body.key, 'pk_test');
  assert.equal(body.events.length, 1);
  const ev = body.events[0];
  assert.deepEqual(Object.keys(ev), ['id', 'type', 'token', 'ts', 'visitor_id']);
  assert.match(ev.id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.equal(ev.type, 'click');
  assert.equal(ev.token, 'tok_1');
  assert.equal(typeof ev.ts, 'number');
  assert.equal(ev.visitor_id, t.fetches[0].url.searchParams.get('visitor_id'));
  assert.deepEqual(JSON.parse(JSON.stringify(got[0].event)), ev);
  await t.close();
});

test('event ids are v4 UUIDs even where crypto.randomUUID is missing (plain http pages)', async () => {
  const t = await page({
    html: HTML,
    before(w) {
      const real = w.crypto;
      const fake = { calls: 0, getRandomValues: (a) => (fake.calls++, real.getRandomValues(a)) };
      Object.defineProperty(w, 'crypto', { configurable: true, value: fake });
    },
  });
  const before = t.w.crypto.calls;
  clicks(t, 3);
  assert.equal(t.w.crypto.calls - before, 3, 'the fallback generated the ids');
  t.setHidden(true);
  await new Promise((r) => setTimeout(r, 5));
  const [body] = await t.events();
  for (const ev of body.events) assert.match(ev.id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.equal(new Set(body.events.map((e) => e.id)).size, 3);
  await t.close();
});

test('twenty events go out as one request', async () => {
  const t = await page({ html: HTML, clock: true });
  clicks(t, 19);
  await new Promise((r) => setTimeout(r, 5));
  assert.equal(t.beacons.length, 0);
  clicks(t, 1);
  await new Promise((r) => setTimeout(r, 5));
  assert.equal(t.beacons.length, 1);
  const [body] = await t.events();
  assert.equal(body.events.length, 20);
  assert.equal(new Set(body.events.map((e) => e.id)).size, 20, 'every event has its own id');
  await t.clock.tick(10000);
  assert.equal(t.beacons.length, 1, 'nothing left for the timer');
  await t.close();
});

test('a batch never holds more than 100 events', async () => {
  const t = await page({ html: HTML, clock: true });
  clicks(t, 250);
  await new Promise((r) => setTimeout(r, 5));
  const sizes = (await t.events()).map((b) => b.events.length);
  assert.deepEqual(sizes, [100, 100, 50]);
  await t.close();
});

test('events are flushed when the page is hidden and on pagehide', async () => {
  const t = await page({ html: HTML, clock: true });
  clicks(t, 2);
  t.setHidden(true);
  await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual((await t.events()).map((b) => b.events.length), [2]);
  t.setHidden(false);
  clicks(t, 3);
  t.w.dispatchEvent(new t.w.Event('pagehide'));
  await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual((await t.events()).map((b) => b.events.length), [2, 3]);
  await t.close();
});

for (const beacon of ['missing', 'false']) {
  test(`when sendBeacon is ${beacon}, events go by fetch with keepalive as text/plain`, async () => {
    const t = await page({
      html: HTML,
      beacon,
      route: (url) => (url.pathname == '/v1/events' ? reply(202, { accepted: 1 }) : reply(200, { offers: [offer()] })),
    });
    clicks(t, 1);
    t.setHidden(true);
    await new Promise((r) => setTimeout(r, 5));
    const post = t.fetches.find((f) => f.url.pathname == '/v1/events');
    assert.ok(post, 'events were posted');
    assert.equal(post.url.href, 'https://api.example/v1/events');
    assert.equal(post.init.method, 'POST');
    assert.equal(post.init.keepalive, true);
    assert.equal(post.init.headers['Content-Type'], 'text/plain');
    const body = JSON.parse(post.init.body);
    assert.equal(body.key, 'pk_test');
    assert.equal(body.events[0].type, 'click');
    assert.equal(t.beacons.length, beacon == 'false' ? 1 : 0);
    assert.deepEqual(t.errors, []);
    await t.close();
  });
}
