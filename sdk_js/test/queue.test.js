import assert from 'node:assert/strict';
import { test } from 'node:test';
import { offer, page, reply } from './harness.js';

test('calls queued before the script loads run in order, then the stub is replaced', async () => {
  const order = [];
  const t = await page({
    html: '<div id="box"></div>',
    before(w) {
      w.__order = order;
      w.offers('on', 'render', () => order.push('first'));
      w.offers('on', 'render', () => order.push('second'));
      w.offers('identify', 'visitor-42');
      w.offers('render', w.document.getElementById('box'), { surface: 'cart', items: ['a', 'b'] });
    },
  });
  assert.equal(t.fetches.length, 1);
  const q = t.fetches[0].url.searchParams;
  assert.equal(t.fetches[0].url.origin + t.fetches[0].url.pathname, 'https://api.example/v1/offers');
  assert.equal(q.get('surface'), 'cart');
  assert.equal(q.get('items'), 'a,b');
  assert.equal(q.get('key'), 'pk_test');
  assert.equal(q.get('visitor_id'), 'visitor-42', 'identify ran before render');
  assert.equal(t.fetches[0].init.credentials, 'omit');
  assert.deepEqual(order, ['first', 'second']);
  assert.equal(t.w.offers.v, 1);
  assert.equal(t.w.offers.q, undefined);
  assert.equal(t.$$('#box [data-offer-id]').length, 1);
  await t.close();
});

test('a second include of the script does nothing', async () => {
  let renders = 0;
  const t = await page({ html: '<div data-offers="product_page" data-product-id="cam"></div>' });
  const first = t.w.offers;
  await first('on', 'render', () => renders++);
  t.include();
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(t.w.offers, first);
  assert.equal(t.fetches.length, 1, 'the placement was fetched once');
  assert.equal(t.$$('[data-offer-id]').length, 1);
  assert.equal(renders, 0);
  await t.close();
});

test('placements are rendered from their data attributes', async () => {
  const t = await page({
    html:
      '<div data-offers="thank_you" data-order-id="o-1" data-order-token="abc" data-limit="2"></div>' +
      '<div data-offers="product_page" data-product-id="cam" data-exclude="x,y"></div>',
  });
  const [a, b] = t.fetches.map((f) => Object.fromEntries(f.url.searchParams));
  assert.deepEqual(
    { ...a, visitor_id: 'v' },
    { key: 'pk_test', surface: 'thank_you', order_id: 'o-1', order_token: 'abc', limit: '2', visitor_id: 'v' }
  );
  assert.equal(b.product_id, 'cam');
  assert.equal(b.exclude, 'x,y');
  await t.close();
});

test('the visitor id is first-party, persisted, and falls back to memory when storage throws', async () => {
  const t = await page({ html: '<div data-offers="cart" data-items="a"></div>' });
  const vid = t.fetches[0].url.searchParams.get('visitor_id');
  assert.match(vid, /^[0-9a-f]{32}$/);
  assert.equal(t.w.localStorage.getItem('offers_vid'), vid);
  await t.close();

  const u = await page({ html: '<div data-offers="cart" data-items="a"></div>', storageThrows: true });
  assert.match(u.fetches[0].url.searchParams.get('visitor_id'), /^[0-9a-f]{32}$/);
  assert.deepEqual(u.errors, []);
  await u.close();
});

test('the endpoint defaults to the origin of the script', async () => {
  const t = await page({ endpoint: '', stub: false });
  // An inline script has no src, so the page origin stands in for it.
  await t.w.offers('render', t.doc.body, { surface: 'cart', items: 'a' });
  assert.equal(t.fetches[0].url.origin, 'https://shop.example');
  await t.close();
});

test('the snippet never throws into the page', async () => {
  const t = await page({
    html: '<div data-offers="cart" data-items="a"></div>',
    route: () => {
      throw new TypeError('network down');
    },
  });
  assert.equal(t.errors.length, 1);
  assert.equal(t.errors[0].message, 'network down');
  await t.w.offers('no_such_method');
  await t.w.offers('on', 'render', () => {
    throw new Error('listener bug');
  });
  t.fetches.length = 0;
  await t.w.offers('render', t.doc.body, { surface: 'cart', items: 'a' });
  assert.equal(t.errors.length, 3);
  assert.equal(t.errors[2].message, 'network down');
  await t.close();
});

test('a server error empties the placement and is reported, not shown', async () => {
  const t = await page({ html: '<div id="p" data-offers="cart" data-items="a"><i>loading</i></div>', route: () => reply(500, {}) });
  assert.equal(t.$('#p').children.length, 0);
  assert.match(t.errors[0].message, /500/);
  await t.close();
});

test('a newer render of a placement wins over a slower older one', async () => {
  let release;
  const t = await page({
    html: '<div id="p"></div>',
    route: (url) =>
      url.searchParams.get('items') == 'slow'
        ? new Promise((r) => (release = () => r(reply(200, { offers: [offer({ offer_id: 'old' })] }))))
        : reply(200, { offers: [offer({ offer_id: 'new' })] }),
  });
  const p = t.$('#p');
  t.w.offers('render', p, { surface: 'cart', items: 'slow' });
  await t.w.offers('render', p, { surface: 'cart', items: 'fast' });
  release();
  await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(t.$$('#p [data-offer-id]').map((e) => e.dataset.offerId), ['new']);
  await t.close();
});
