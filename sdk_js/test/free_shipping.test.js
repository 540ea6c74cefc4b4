import assert from 'node:assert/strict';
import { test } from 'node:test';
import { offer, page, reply } from './harness.js';

const usd = (amount) => ({ amount, currency: 'USD' });

test('a cart below the free-shipping threshold shows the gap and a progress bar', async () => {
  const t = await page({
    html: '<div id="c" data-offers="cart" data-items="cam"></div>',
    route: () => reply(200, { offers: [offer()], free_shipping: { threshold: usd(5000), remaining: usd(1201) } }),
  });
  const line = t.$('#c [data-offer-free-shipping]');
  assert.ok(line, 'the free-shipping line is there');
  assert.equal(line.textContent, 'Spend $12.01 more for free shipping');
  assert.equal(line.className, 'offers-ship');
  const bar = line.querySelector('progress');
  assert.equal(bar.className, 'offers-bar');
  assert.equal(bar.getAttribute('max'), '5000');
  assert.equal(bar.getAttribute('value'), '3799');
  assert.equal(line.nextElementSibling.className, 'offers-list', 'the line comes before the offers');
  assert.equal(t.$$('#c [style]').length, 0, 'no inline styles');
  await t.close();
});

test('the gap is shown in the cart currency, on checkout too, even with no offer', async () => {
  const eur = (amount) => ({ amount, currency: 'EUR' });
  const t = await page({
    html: '<div id="c" data-offers="checkout" data-items="cam"></div>',
    route: () => reply(200, { offers: [], free_shipping: { threshold: eur(6000), remaining: eur(550) } }),
  });
  assert.equal(t.$('#c [data-offer-free-shipping]').textContent, 'Spend €5.50 more for free shipping');
  assert.equal(t.$$('#c [data-offer-id]').length, 0);
  await t.close();
});

test('the line goes away once the cart reaches the threshold', async () => {
  let items = 'cam';
  const t = await page({
    html: '<div id="c" data-offers="cart" data-items="cam"></div>',
    route: (url) =>
      reply(
        200,
        url.searchParams.get('items') == 'cam'
          ? { offers: [offer()], free_shipping: { threshold: usd(5000), remaining: usd(1201) } }
          : { offers: [offer({ offer_id: 'off_2', product_id: 'bag' })] }
      ),
  });
  assert.equal(t.$$('#c [data-offer-free-shipping]').length, 1);
  items = 'cam,sd-128';
  await t.w.offers('render', t.$('#c'), { items });
  assert.equal(t.$$('#c [data-offer-free-shipping]').length, 0);
  assert.deepEqual(t.$$('#c [data-offer-id]').map((e) => e.dataset.offerId), ['off_2']);
  await t.close();
});
