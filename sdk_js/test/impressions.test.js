import assert from 'node:assert/strict';
import { test } from 'node:test';
import { offer, page, reply } from './harness.js';

const HTML = '<div data-offers="product_page" data-product-id="cam"></div>';
const two = () => reply(200, { offers: [offer(), offer({ offer_id: 'off_2', token: 'tok_2' })] });
const flushed = async (t) => {
  t.setHidden(true);
  await new Promise((r) => setTimeout(r, 5));
  t.setHidden(false);
  return (await t.events()).flatMap((b) => b.events.map((e) => `${e.type}:${e.token}`));
};

test('the observer watches each offer at a 50% threshold', async () => {
  const t = await page({ html: HTML, route: two, clock: true });
  assert.equal(t.observers.length, 1);
  assert.equal(t.observers[0].options.threshold, 0.5);
  assert.deepEqual([...t.observers[0].targets].map((e) => e.dataset.offerId), ['off_1', 'off_2']);
  await t.close();
});

test('an impression needs 50% visibility for one second, once per offer', async () => {
  const got = [];
  const t = await page({ html: HTML, route: two, clock: true, before: (w) => w.offers('on', 'impression', (d) => got.push(d.offer.offer_id)) });
  const [a, b] = t.$$('[data-offer-id]');
  t.see(a, 0.6);
  t.see(b, 0.3);
  await t.clock.tick(999);
  assert.deepEqual(got, []);
  await t.clock.tick(1);
  assert.deepEqual(got, ['off_1']);
  t.see(a, 0);
  t.see(a, 1);
  t.see(b, 0.5);
  await t.clock.tick(5000);
  assert.deepEqual(got, ['off_1', 'off_2']);
  assert.deepEqual(await flushed(t), ['impression:tok_1', 'impression:tok_2']);
  assert.equal(t.observers[0].targets.size, 0, 'counted offers are no longer observed');
  await t.close();
});

test('visible for half a second and then scrolled away records nothing', async () => {
  const t = await page({ html: HTML, route: two, clock: true });
  const [a] = t.$$('[data-offer-id]');
  t.see(a, 1);
  await t.clock.tick(500);
  t.see(a, 0.2);
  await t.clock.tick(5000);
  assert.deepEqual(await flushed(t), []);
  await t.close();
});

test('the timer stops while the tab is hidden and restarts when it is shown', async () => {
  const t = await page({ html: HTML, route: two, clock: true });
  const [a] = t.$$('[data-offer-id]');
  t.see(a, 1);
  await t.clock.tick(700);
  t.setHidden(true);
  await t.clock.tick(5000);
  assert.deepEqual(await t.events(), []);
  t.setHidden(false);
  await t.clock.tick(700);
  assert.deepEqual(await t.events(), [], 'the second clock starts from zero');
  await t.clock.tick(300);
  assert.deepEqual(await flushed(t), ['impression:tok_1']);
  await t.close();
});

test('a re-render of the same offer in the page view counts no second impression', async () => {
  const t = await page({ html: HTML, route: two, clock: true });
  t.see(t.$('[data-offer-id="off_1"]'), 1);
  await t.clock.tick(1000);
  await t.w.offers('render', t.$('[data-offers]'));
  const fresh = t.$('[data-offer-id="off_1"]');
  assert.equal([...t.observers[0].targets].includes(fresh), false);
  t.see(fresh, 1);
  await t.clock.tick(2000);
  assert.deepEqual(await flushed(t), ['impression:tok_1']);
  await t.close();
});
