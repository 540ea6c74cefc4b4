import assert from 'node:assert/strict';
import { test } from 'node:test';
import { offer, page, reply } from './harness.js';

const PLACES =
  '<div id="pp" data-offers="product_page" data-product-id="cam"></div>' +
  '<div id="ca" data-offers="cart" data-items="cam"></div>' +
  '<div id="co" data-offers="checkout" data-items="cam"></div>';

// One offer per surface, told apart by its token, so each button's call can be traced.
const perSurface = (url) => {
  const surface = url.searchParams.get('surface');
  return reply(200, { offers: [offer({ offer_id: 'off_' + surface, token: 'tok_' + surface })] });
};

const bundle = offer({
  offer_id: 'off_b',
  product_id: 'cam',
  kind: 'bundle',
  title: 'Camera X100 kit',
  reason: 'Frequently bought together',
  items: [
    { product_id: 'cam', title: 'Camera X100', price: { amount: 49900, currency: 'USD' }, offer_price: { amount: 44910, currency: 'USD' } },
    { product_id: 'sd-128', title: '128 GB SD card', price: { amount: 2999, currency: 'USD' }, offer_price: { amount: 2699, currency: 'USD' } },
    { product_id: 'bag', title: 'Camera bag', price: { amount: 3900, currency: 'USD' }, offer_price: { amount: 3510, currency: 'USD' } },
  ],
  price: { amount: 56799, currency: 'USD' },
  discount_pct: 10,
  offer_price: { amount: 51119, currency: 'USD' },
  token: 'tok_b',
});

const tick = () => new Promise((r) => setTimeout(r, 10));

test('product page, cart and checkout offers carry an add button that calls the handler with the offer', async () => {
  const calls = [];
  const t = await page({ html: PLACES, route: perSurface, before: (w) => w.offers('on', 'add', (d) => calls.push(d)) });
  for (const id of ['pp', 'ca', 'co']) t.$(`#${id} [data-offer-action="add"]`).click();
  await tick();
  assert.deepEqual(
    calls.map((d) => [d.offer.token, d.quantity]),
    [
      ['tok_product_page', 1],
      ['tok_cart', 1],
      ['tok_checkout', 1],
    ]
  );
  assert.deepEqual(calls[1].offer, offer({ offer_id: 'off_cart', token: 'tok_cart' }), 'the offer as the service sent it');
  assert.equal(t.w.location.href, 'https://shop.example/products/camera', 'a handler means no navigation');
  assert.deepEqual(t.errors, []);
  await t.close();
});

test('an add is recorded as an add event, like a click', async () => {
  const t = await page({ html: PLACES, route: perSurface, before: (w) => w.offers('on', 'add', () => {}) });
  t.$('#ca [data-offer-action="add"]').click();
  await tick();
  t.setHidden(true);
  await tick();
  const [body] = await t.events();
  assert.equal(body.key, 'pk_test');
  assert.equal(body.events.length, 1);
  const ev = body.events[0];
  assert.deepEqual(Object.keys(ev), ['id', 'type', 'token', 'ts', 'visitor_id']);
  assert.equal(ev.type, 'add');
  assert.equal(ev.token, 'tok_cart');
  assert.equal(ev.visitor_id, t.fetches[0].url.searchParams.get('visitor_id'));
  await t.close();
});

test('the second click of a double click adds nothing more', async () => {
  const calls = [];
  const t = await page({ html: PLACES, route: perSurface, before: (w) => w.offers('on', 'add', (d) => calls.push(d)) });
  const b = t.$('#pp [data-offer-action="add"]');
  b.dispatchEvent(new t.w.MouseEvent('click', { bubbles: true, detail: 1 }));
  b.dispatchEvent(new t.w.MouseEvent('click', { bubbles: true, detail: 2 }));
  await tick();
  assert.equal(calls.length, 1);
  b.dispatchEvent(new t.w.MouseEvent('click', { bubbles: true, detail: 1 }));
  await tick();
  assert.equal(calls.length, 2, 'a later, separate click adds again');
  await t.close();
});

test('without a handler, add follows the offer link', async () => {
  const t = await page({ html: '<div data-offers="cart" data-items="cam"></div>' });
  t.$('[data-offer-action="add"]').click();
  await tick();
  assert.equal(t.w.location.href, 'https://shop.example/products/sd-128');
  await t.close();
});

test('without a handler, an add whose link is unsafe stays on the page', async () => {
  const t = await page({
    html: '<div data-offers="cart" data-items="cam"></div>',
    route: () => reply(200, { offers: [offer({ url: 'javascript:alert(1)' })] }),
  });
  t.$('[data-offer-action="add"]').click();
  await tick();
  assert.equal(t.w.location.href, 'https://shop.example/products/camera');
  assert.deepEqual(t.errors, []);
  await t.close();
});

test('a handler that throws or rejects is reported and never breaks the page', async () => {
  const t = await page({
    html: PLACES,
    route: perSurface,
    before(w) {
      w.offers('on', 'add', () => {
        throw new Error('cart bug');
      });
      w.offers('on', 'add', async () => {
        throw new Error('cart rejected');
      });
    },
  });
  t.$('#pp [data-offer-action="add"]').click();
  await tick();
  assert.deepEqual(t.errors.map((e) => e.message).sort(), ['cart bug', 'cart rejected']);
  assert.equal(t.w.location.href, 'https://shop.example/products/camera');
  t.setHidden(true);
  await tick();
  assert.deepEqual((await t.events()).flatMap((b) => b.events.map((e) => e.type)), ['add'], 'still recorded');
  await t.close();
});

test('a bundle shows its items, the struck sum and its price, and one "Add all" button', async () => {
  const t = await page({
    html: '<div id="pp" data-offers="product_page" data-product-id="cam"></div>',
    route: () => reply(200, { offers: [bundle, offer({ offer_id: 'off_2', token: 'tok_2' })] }),
  });
  const card = t.$('[data-offer-id="off_b"]');
  assert.deepEqual(
    [...card.querySelectorAll('ul.offers-bundle > li.offers-part')].map((li) => li.textContent),
    ['Camera X100', '128 GB SD card', 'Camera bag']
  );
  assert.equal(card.querySelector('.offers-was').textContent, 'Was $567.99');
  assert.equal(card.querySelector('.offers-now').textContent, '$511.19');
  assert.equal(card.querySelector('.offers-badge').textContent, '-10%');
  const buttons = [...card.querySelectorAll('button')];
  assert.deepEqual(
    buttons.map((b) => [b.dataset.offerAction, b.textContent, b.getAttribute('aria-label')]),
    [['add', 'Add all', 'Add all: Camera X100 kit']]
  );
  assert.equal(t.$('[data-offer-id="off_2"] [data-offer-action="add"]').textContent, 'Add to cart');
  await t.close();
});

test('"Add all" calls the handler once with the bundle and its items', async () => {
  const calls = [];
  const t = await page({
    html: '<div data-offers="product_page" data-product-id="cam"></div>',
    route: () => reply(200, { offers: [bundle] }),
    before: (w) => w.offers('on', 'add', (d) => calls.push(d)),
  });
  t.$('[data-offer-action="add"]').click();
  await tick();
  assert.equal(calls.length, 1);
  assert.equal(calls[0].quantity, 1);
  assert.equal(calls[0].offer.token, 'tok_b');
  assert.deepEqual(
    calls[0].offer.items.map((i) => [i.product_id, i.offer_price.amount]),
    [
      ['cam', 44910],
      ['sd-128', 2699],
      ['bag', 3510],
    ]
  );
  await t.close();
});

test('a custom template learns where add is allowed and its add control is wired', async () => {
  const seen = [];
  const calls = [];
  const t = await page({
    html: PLACES,
    route: perSurface,
    before(w) {
      w.offers('on', 'add', (d) => calls.push(d.offer.token));
      w.offers('template', (o, { el, surface, add, buttons }) => {
        seen.push([surface, add, buttons]);
        const card = el('div', 'tile', null, 'product-card grid__item');
        const b = el('button', null, 'Buy', 'btn btn--primary');
        b.dataset.offerAction = 'add';
        card.append(el('h3', null, o.title, 'card__title'), b);
        return card;
      });
    },
  });
  assert.deepEqual(seen, [
    ['product_page', true, false],
    ['cart', true, false],
    ['checkout', true, false],
  ]);
  const card = t.$('#ca [data-offer-id]');
  assert.equal(card.className, 'offers-tile product-card grid__item');
  assert.equal(card.querySelector('h3').className, 'card__title');
  assert.equal(card.querySelector('button').className, 'btn btn--primary');
  assert.equal(card.parentElement.className, 'offers-item', 'the card is wrapped in an <li>');
  assert.equal(card.parentElement.parentElement.className, 'offers-list');
  card.querySelector('button').click();
  await tick();
  assert.deepEqual(calls, ['tok_cart']);
  await t.close();
});
