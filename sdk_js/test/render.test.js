import assert from 'node:assert/strict';
import { test } from 'node:test';
import { offer, page, reply } from './harness.js';

const only = (...offers) => () => reply(200, { holdout: false, offers });

test('an offer renders as an accessible list item with the stable hooks', async () => {
  const t = await page({ html: '<div id="p" data-offers="product_page" data-product-id="cam"></div>' });
  const p = t.$('#p');
  assert.equal(
    p.innerHTML,
    '<ul class="offers-list"><li class="offers-offer" data-offer-id="off_1" data-product-id="sd-128">' +
      '<a class="offers-link" href="https://shop.example/products/sd-128">' +
      '<img class="offers-image" src="https://cdn.example/sd-128.jpg" alt="128 GB SD card" loading="lazy">' +
      '<span class="offers-title">128 GB SD card</span></a>' +
      '<p class="offers-reason">Frequently bought with Camera X100</p>' +
      '<p class="offers-price"><s class="offers-was"><span class="offers-sr">Was </span>$29.99</s> ' +
      '<span class="offers-now">$26.99</span> <span class="offers-badge">-10%</span></p>' +
      '<div class="offers-actions"><button class="offers-add" type="button" aria-label="Add to cart: 128 GB SD card" ' +
      'data-offer-action="add">Add to cart</button></div>' +
      '<p class="offers-status" role="status" aria-live="polite"></p></li></ul>'
  );
  assert.equal(t.$$('[style]').length, 0, 'no inline styles');
  await t.close();
});

test('prices are formatted from minor units in the offer currency', async () => {
  const t = await page({
    html: '<div data-offers="cart" data-items="a"></div>',
    route: only(
      offer({ discount_pct: 0, price: { amount: 1500, currency: 'JPY' }, offer_price: { amount: 1500, currency: 'JPY' } }),
      offer({ offer_id: 'off_2', discount_pct: 0, price: { amount: 1999, currency: 'EUR' }, offer_price: { amount: 1999, currency: 'EUR' } })
    ),
  });
  assert.deepEqual(t.$$('.offers-now').map((e) => e.textContent), ['¥1,500', '€19.99']);
  assert.equal(t.$$('.offers-was').length, 0, 'no strike-through without a discount');
  assert.equal(t.$$('.offers-badge').length, 0);
  await t.close();
});

test('minor units follow ISO 4217: 0 digits for ISK, 3 for KWD, 2 for HUF and TWD', async () => {
  const price = (id, amount, currency) =>
    offer({ offer_id: id, discount_pct: 0, price: { amount, currency }, offer_price: { amount, currency } });
  const t = await page({
    html: '<div data-offers="cart" data-items="a"></div>',
    route: only(price('a', 1500, 'ISK'), price('b', 1500, 'KWD'), price('c', 12950, 'HUF'), price('d', 12950, 'TWD')),
  });
  const shown = t.$$('.offers-now').map((e) => e.textContent);
  const intl = (v, c) => new Intl.NumberFormat(undefined, { style: 'currency', currency: c }).format(v);
  assert.deepEqual(shown, [intl(1500, 'ISK'), intl(1.5, 'KWD'), intl(129.5, 'HUF'), intl(129.5, 'TWD')]);
  await t.close();
});

test('a hostile title is rendered as text and creates no element', async () => {
  const title = '<img src=x onerror=alert(1)>';
  const t = await page({
    html: '<div data-offers="cart" data-items="a"></div>',
    route: only(offer({ title, reason: '<script>alert(2)</script>', image_url: null })),
  });
  assert.equal(t.$('.offers-title').textContent, title);
  assert.equal(t.$('.offers-reason').textContent, '<script>alert(2)</script>');
  assert.equal(t.$$('img').length, 0);
  assert.equal(t.$$('[data-offers] script').length, 0);
  await t.close();
});

test('unsafe link and image URLs are dropped, https and relative ones kept', async () => {
  const t = await page({
    html: '<div data-offers="product_page" data-product-id="cam"></div>',
    route: only(
      offer({ offer_id: 'a', url: 'javascript:alert(1)', image_url: 'data:image/png;base64,AAAA' }),
      offer({ offer_id: 'b', url: 'http://shop.example.evil/x', image_url: 'http://cdn.example/b.jpg' }),
      offer({ offer_id: 'c', url: ' java\tscript:alert(1)', image_url: '//cdn.example/c.jpg' }),
      offer({ offer_id: 'd', url: '/products/d', image_url: 'https://cdn.example/d.jpg' })
    ),
  });
  const link = (id) => t.$(`[data-offer-id="${id}"] a`).getAttribute('href');
  const img = (id) => t.$(`[data-offer-id="${id}"] img`)?.getAttribute('src');
  assert.equal(link('a'), null);
  assert.equal(img('a'), undefined);
  assert.equal(link('b'), null);
  assert.equal(img('b'), undefined);
  assert.equal(link('c'), null);
  assert.equal(img('c'), 'https://cdn.example/c.jpg', 'protocol-relative inherits https');
  assert.equal(link('d'), 'https://shop.example/products/d');
  assert.equal(img('d'), 'https://cdn.example/d.jpg');
  await t.close();
});

test('the URL rule: https, same origin, or http between local hosts for the demo', async () => {
  const check = async (url, cases) => {
    let safeUrl;
    const t = await page({ url, stub: false });
    await t.w.offers('template', (o, helpers) => ((safeUrl = helpers.safeUrl), null));
    await t.w.offers('render', t.doc.body, { surface: 'cart', items: 'a' });
    for (const [input, expected] of cases) assert.equal(safeUrl(input), expected, `${input} on ${url}`);
    await t.close();
  };
  await check('https://shop.example/p', [
    ['https://a.example/x', 'https://a.example/x'],
    ['x.jpg', 'https://shop.example/x.jpg'],
    ['http://a.example/x', undefined],
    ['http://localhost:8000/x', undefined],
    ['javascript:alert(1)', undefined],
    ['JaVaScRiPt:alert(1)', undefined],
    ['data:text/html,hi', undefined],
    ['vbscript:x', undefined],
    ['', undefined],
    [undefined, undefined],
    [null, undefined],
  ]);
  await check('http://localhost:8000/demo/', [
    ['http://127.0.0.1:8000/img/a.jpg', 'http://127.0.0.1:8000/img/a.jpg'],
    ['/img/a.jpg', 'http://localhost:8000/img/a.jpg'],
    ['http://cdn.example/a.jpg', undefined],
    ['https://cdn.example/a.jpg', 'https://cdn.example/a.jpg'],
  ]);
  await check('http://plain-http-shop.example/', [
    ['/img/a.jpg', 'http://plain-http-shop.example/img/a.jpg'],
    ['http://cdn.example/a.jpg', undefined],
  ]);
});

test('holdout and 404 render nothing and report nothing', async () => {
  const t = await page({
    html:
      '<div id="h" data-offers="cart" data-items="a"></div>' +
      '<div id="n" data-offers="product_page" data-product-id="gone"><span>placeholder</span></div>',
    route: (url) =>
      url.searchParams.get('surface') == 'cart'
        ? reply(200, { holdout: true, offers: [] })
        : reply(404, { error: { code: 'unknown_product', message: 'Unknown product.' } }),
  });
  assert.equal(t.$('#h').childNodes.length, 0);
  assert.equal(t.$('#n').childNodes.length, 0);
  assert.deepEqual(t.errors, []);
  await t.close();
});

test('accept and decline buttons appear on thank_you and on checkout with data-accept; add elsewhere', async () => {
  const t = await page({
    html:
      '<div id="ty" data-offers="thank_you" data-order-id="o" data-order-token="t"></div>' +
      '<div id="co" data-offers="checkout" data-items="a"></div>' +
      '<div id="coa" data-offers="checkout" data-items="a" data-accept></div>' +
      '<div id="pp" data-offers="product_page" data-product-id="a"></div>' +
      '<div id="ca" data-offers="cart" data-items="a"></div>',
  });
  const actions = (id) =>
    t.$$(`#${id} button`).map((b) => [b.type, b.dataset.offerAction, b.textContent, b.getAttribute('aria-label')]);
  const both = [
    ['button', 'accept', 'Add to order', 'Add to order: 128 GB SD card'],
    ['button', 'decline', 'No thanks', 'No thanks: 128 GB SD card'],
  ];
  const add = [['button', 'add', 'Add to cart', 'Add to cart: 128 GB SD card']];
  assert.deepEqual(actions('ty'), both);
  assert.deepEqual(actions('co'), add);
  assert.deepEqual(actions('coa'), both);
  assert.deepEqual(actions('pp'), add);
  assert.deepEqual(actions('ca'), add);
  await t.close();
});

test('a custom template keeps the data attributes and gets its buttons wired', async () => {
  const t = await page({
    html: '<div id="p" data-offers="thank_you" data-order-id="o" data-order-token="t"></div>',
    before(w) {
      w.offers('template', (o, { el, money, buttons }) => {
        const card = el('article', 'custom', null);
        card.append(el('h3', 'name', o.title), el('b', 'cost', money(o.offer_price)));
        if (buttons) {
          const b = el('button', 'yes', 'Yes please');
          b.dataset.offerAction = 'accept';
          card.append(b);
        }
        return card;
      });
    },
    route: (url) =>
      url.pathname == '/v1/offers' ? reply(200, { offers: [offer()] }) : reply(200, { status: 'accepted' }),
  });
  const card = t.$('#p article');
  assert.equal(card.parentElement.tagName, 'LI', 'wrapped in a list item');
  assert.equal(card.parentElement.parentElement.className, 'offers-list');
  assert.equal(card.className, 'offers-custom');
  assert.equal(card.dataset.offerId, 'off_1');
  assert.equal(card.dataset.productId, 'sd-128');
  assert.equal(card.querySelector('.offers-cost').textContent, '$26.99');
  const status = card.querySelector('[role=status]');
  assert.ok(status, 'a status region is added when the template has none');
  card.querySelector('button').click();
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(t.fetches[1].url.pathname, '/v1/accept');
  assert.equal(card.dataset.state, 'accepted');
  assert.equal(status.textContent, 'Added to your order');
  await t.close();
});

test('a template that throws falls back to the default card and reports the error', async () => {
  const t = await page({
    html: '<div data-offers="cart" data-items="a"></div>',
    before(w) {
      w.offers('template', () => {
        throw new Error('template bug');
      });
    },
  });
  assert.equal(t.$$('li.offers-offer[data-offer-id="off_1"]').length, 1);
  assert.equal(t.errors[0].message, 'template bug');
  await t.close();
});

test('the render listener receives the placement and its offers', async () => {
  const seen = [];
  const t = await page({
    html: '<div id="p" data-offers="cart" data-items="a"></div>',
    before(w) {
      w.offers('on', 'render', (d) => seen.push([d.element.id, d.surface, d.offers.length, d.holdout]));
    },
  });
  assert.deepEqual(seen, [['p', 'cart', 1, false]]);
  await t.close();
});
