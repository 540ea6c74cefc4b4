import assert from 'node:assert/strict';
import { test } from 'node:test';
import { offer, page, reply } from './harness.js';

const HTML = '<div id="p" data-offers="thank_you" data-order-id="o-1" data-order-token="tok"></div>';
const tick = () => new Promise((r) => setTimeout(r, 10));

// A server whose accept/decline answers the test controls; offers are two thank_you offers.
const server = (answers) => {
  const posts = [];
  const route = (url, init) => {
    if (url.pathname == '/v1/offers') return reply(200, { offers: [offer(), offer({ offer_id: 'off_2', token: 'tok_2' })] });
    posts.push({ path: url.pathname, init, body: JSON.parse(init.body) });
    const next = answers.shift();
    return typeof next == 'function' ? next() : next;
  };
  return { posts, route };
};

test('a double click on accept makes one request, then shows the accepted state', async () => {
  let resolve;
  const s = server([() => new Promise((r) => (resolve = r))]);
  const accepted = [];
  const t = await page({ html: HTML, route: s.route, before: (w) => w.offers('on', 'accept', (d) => accepted.push(d)) });
  const card = t.$('[data-offer-id="off_1"]');
  const button = card.querySelector('[data-offer-action="accept"]');
  button.click();
  button.click();
  card.querySelector('.offers-accept').dispatchEvent(new t.w.MouseEvent('click', { bubbles: true }));
  await tick();
  assert.equal(s.posts.length, 1);
  assert.equal(card.dataset.state, 'pending');
  assert.equal(button.disabled, true);
  assert.equal(card.querySelector('[data-offer-action="decline"]').disabled, true);
  const { path, init, body } = s.posts[0];
  assert.equal(path, '/v1/accept');
  assert.equal(init.method, 'POST');
  assert.equal(init.headers['Content-Type'], 'application/json');
  assert.match(init.headers['Idempotency-Key'], /^[0-9a-f-]{36}$/);
  assert.deepEqual(body, { key: 'pk_test', token: 'tok_1', quantity: 1 });
  resolve(reply(200, { status: 'accepted', charge_id: 'ch_1' }));
  await tick();
  assert.equal(card.dataset.state, 'accepted');
  assert.equal(card.querySelector('[role=status]').textContent, 'Added to your order');
  assert.equal(card.querySelector('[role=status]').getAttribute('aria-live'), 'polite');
  assert.equal(accepted.length, 1);
  assert.equal(accepted[0].response.charge_id, 'ch_1');
  button.click();
  await tick();
  assert.equal(s.posts.length, 1, 'an accepted offer cannot be accepted again');
  await t.close();
});

test('a retry after a failure reuses the Idempotency-Key of the rendered offer', async () => {
  const s = server([reply(502, { error: { code: 'charge_failed' } }), () => Promise.reject(new TypeError('offline')), reply(200, {})]);
  const t = await page({ html: HTML, route: s.route });
  const card = t.$('[data-offer-id="off_1"]');
  const button = card.querySelector('[data-offer-action="accept"]');
  button.click();
  await tick();
  assert.equal(card.dataset.state, 'error');
  assert.equal(card.querySelector('[role=status]').textContent, 'Something went wrong');
  assert.equal(button.disabled, false, 'a failed charge may be retried');
  button.click();
  await tick();
  assert.equal(card.dataset.state, 'error');
  assert.equal(t.errors.at(-1).message, 'offline');
  button.click();
  await tick();
  assert.equal(card.dataset.state, 'accepted');
  const keys = s.posts.map((p) => p.init.headers['Idempotency-Key']);
  assert.equal(keys.length, 3);
  assert.equal(new Set(keys).size, 1);
  // The second offer has a key of its own.
  t.$('[data-offer-id="off_2"] [data-offer-action="accept"]').click();
  await tick();
  assert.notEqual(s.posts[3].init.headers['Idempotency-Key'], keys[0]);
  await t.close();
});

for (const [status, message] of [
  [402, 'Payment declined'],
  [410, 'This offer has expired'],
]) {
  test(`a ${status} answer shows "${message}" and is final`, async () => {
    const s = server([reply(status, { error: {} })]);
    const t = await page({ html: HTML, route: s.route });
    const card = t.$('[data-offer-id="off_1"]');
    card.querySelector('[data-offer-action="accept"]').click();
    await tick();
    assert.equal(card.dataset.state, 'error');
    assert.equal(card.querySelector('[role=status]').textContent, message);
    assert.equal(card.querySelector('[data-offer-action="accept"]').disabled, true);
    await t.close();
  });
}

test('a 202 pending answer says the payment is processing and asks the same key again', async () => {
  const s = server([reply(202, { status: 'pending', code: 'charge_pending' }), reply(200, { status: 'accepted', charge_id: 'ch_9' })]);
  const t = await page({ html: HTML, route: s.route });
  const card = t.$('[data-offer-id="off_1"]');
  const button = card.querySelector('[data-offer-action="accept"]');
  button.click();
  await tick();
  assert.equal(card.dataset.state, 'pending');
  assert.equal(card.querySelector('[role=status]').textContent, 'Payment processing');
  assert.equal(button.disabled, true, 'a charge still processing is not clicked again');
  await new Promise((r) => setTimeout(r, 1100));
  assert.equal(card.dataset.state, 'accepted');
  const keys = s.posts.map((p) => p.init.headers['Idempotency-Key']);
  assert.equal(keys.length, 2);
  assert.equal(new Set(keys).size, 1);
  await t.close();
});

test('decline renders the downsell in place of the declined offer', async () => {
  const downsell = offer({ offer_id: 'off_d', product_id: 'sd-64', kind: 'downsell', title: '64 GB SD card', token: 'tok_d' });
  const s = server([reply(200, { downsell }), reply(200, { status: 'accepted' })]);
  const declines = [];
  const t = await page({ html: HTML, route: s.route, before: (w) => w.offers('on', 'decline', (d) => declines.push(d)) });
  t.$('[data-offer-id="off_1"] [data-offer-action="decline"]').click();
  await tick();
  assert.deepEqual(s.posts[0].body, { key: 'pk_test', token: 'tok_1' });
  assert.equal(s.posts[0].path, '/v1/decline');
  assert.deepEqual(t.$$('#p .offers-list > li').map((li) => li.dataset.offerId), ['off_d', 'off_2']);
  const card = t.$('[data-offer-id="off_d"]');
  assert.equal(card.dataset.productId, 'sd-64');
  assert.equal(card.querySelector('.offers-title').textContent, '64 GB SD card');
  assert.equal(declines[0].downsell.offer_id, 'off_d');
  card.querySelector('[data-offer-action="accept"]').click();
  await tick();
  assert.equal(s.posts[1].body.token, 'tok_d');
  assert.equal(card.dataset.state, 'accepted');
  await t.close();
});

test('decline without a downsell marks the offer declined and says so, even when the request fails', async () => {
  const s = server([reply(200, { downsell: null }), reply(500, {})]);
  const t = await page({ html: HTML, route: s.route });
  for (const id of ['off_1', 'off_2']) {
    const card = t.$(`[data-offer-id="${id}"]`);
    card.querySelector('[data-offer-action="decline"]').click();
    await tick();
    assert.equal(card.dataset.state, 'declined');
    assert.equal(card.querySelector('[data-offer-action="accept"]').disabled, true);
    assert.equal(card.querySelector('[role=status]').textContent, "Thanks, we won't show this again");
  }
  await t.close();
});

test('accept and decline are also queued as events', async () => {
  const s = server([reply(200, {}), reply(200, { downsell: null })]);
  const t = await page({ html: HTML, route: s.route });
  t.$('[data-offer-id="off_1"] [data-offer-action="accept"]').click();
  await tick();
  t.$('[data-offer-id="off_2"] [data-offer-action="decline"]').click();
  await tick();
  t.setHidden(true);
  await tick();
  const [body] = await t.events();
  assert.deepEqual(body.events.map((e) => [e.type, e.token]), [
    ['accept', 'tok_1'],
    ['decline', 'tok_2'],
  ]);
  await t.close();
});
