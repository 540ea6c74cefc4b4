/*
 * offers.js: the offer service's storefront snippet. Architecture and merchant docs: sdk_js/README.md.
 *
 * Paste the queue stub before (or anywhere near) the async script tag; calls made before the
 * script loads are queued in offers.q and replayed in order once it runs:
 *
 *   <script>window.offers=window.offers||function(){(offers.q=offers.q||[]).push(arguments)};</script>
 *   <script async src="https://offers.example/sdk/v1/offers.js" data-key="pk_..."></script>
 *
 * Rules this file keeps (CONVENTIONS habit 9): one IIFE and one global (`offers`), ES2017, no
 * dependencies, DOM APIs and textContent only (no innerHTML, no eval, no inline styles, so it runs
 * under a strict CSP), only https:/same-origin URLs, and nothing ever throws into the host page:
 * every entry point goes through `guard`, which reports to the 'error' listeners instead.
 * Budget: 3.5 KB gzipped, enforced by test/build.test.js. esbuild minifies names, so keep names
 * readable here but avoid long string literals.
 */
(() => {
  const win = window;
  const doc = document;
  const prev = win.offers;
  // A second include finds the real function (marked with .v) and does nothing.
  if (prev && prev.v) return;

  // currentScript is only set while this file first runs, so read the config now.
  const script = doc.currentScript;
  const conf = (script && script.dataset) || {};
  const key = conf.key;
  const endpoint = (conf.endpoint || (script && script.src ? new URL(script.src).origin : location.origin)).replace(/\/+$/, '');

  // ---- listeners and the guard -------------------------------------------------------------
  const listeners = {};
  // Awaited, so a storefront handler that rejects (e.g. an async 'add') is reported, not unhandled.
  const emit = (type, detail) =>
    (listeners[type] || []).forEach(async (fn) => {
      try {
        await fn(detail);
      } catch (e) {
        if (type != 'error') emit('error', e);
      }
    });
  const report = (e) => emit('error', e);
  // Wraps an async function so that neither a throw nor a rejection reaches the page.
  const guard = (fn) => (...args) => fn(...args).catch(report);

  // ---- ids ----------------------------------------------------------------------------------
  const hex = (n) => Array.from(crypto.getRandomValues(new Uint8Array(n)), (b) => (b + 256).toString(16).slice(1)).join('');
  // A well-formed v4 UUID from getRandomValues (randomUUID exists only in secure contexts).
  const uuid = () => hex(16).replace(/(.{8})(.{4}).(.{3}).(.{3})(.{12})/, '$1-$2-4$3-a$4-$5');

  // First-party visitor id, kept in localStorage (for later pages) and in the offer_vid cookie (for
  // the store's server, which sends it with the order); storage can throw (Safari private mode,
  // blocked cookies, sandboxed frames): then it lives in memory for this page.
  let visitor;
  const remember = (id) => {
    visitor = '' + id;
    try {
      doc.cookie =
        'offer_vid=' + encodeURIComponent(visitor) + ';path=/;max-age=31536000;samesite=lax' + (location.protocol == 'https:' ? ';secure' : '');
      localStorage.setItem('offers_vid', visitor);
    } catch (e) {}
  };
  try {
    visitor = localStorage.getItem('offers_vid');
  } catch (e) {}
  remember(visitor || hex(16));

  // ---- helpers for rendering ----------------------------------------------------------------
  // cls gets the offers- prefix; own (a template's option) adds the host's classes as they are.
  const el = (tag, cls, text, own) => {
    const e = doc.createElement(tag);
    e.className = [cls && 'offers-' + cls, own].join(' ').trim();
    if (text != null) e.textContent = text;
    return e;
  };
  const isLocal = (host) => /^(localhost|127\.0\.0\.1|\[::1\])$/.test(host);
  // https: anywhere; http: only same-origin with the page (a relative URL) or when both the page
  // and the URL are on localhost (the demo). Everything else (javascript:, data:, ...) is dropped.
  const safeUrl = (u) => {
    try {
      const x = new URL(u, location.href);
      const p = x.protocol;
      const local = isLocal(x.hostname) && isLocal(location.hostname);
      if (u && (p == 'https:' || (p == 'http:' && (x.origin == location.origin || local)))) return x.href;
    } catch (e) {}
  };
  // ISO 4217 minor-unit digits other than 2, the table of offer_service/domain/money.py.
  const DIGITS0 = 'BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX VND VUV XAF XOF XPF';
  const DIGITS3 = 'BHD IQD JOD KWD LYD OMR TND';
  const money = (m) =>
    new Intl.NumberFormat(undefined, { style: 'currency', currency: m.currency }).format(
      m.amount / 10 ** (DIGITS0.includes(m.currency) ? 0 : DIGITS3.includes(m.currency) ? 3 : 2)
    );
  const post = (path, body, headers) =>
    fetch(endpoint + '/v1/' + path + '?key=' + encodeURIComponent(key), {
      method: 'POST',
      credentials: 'omit',
      headers: Object.assign({ 'Content-Type': 'application/json' }, headers),
      body: JSON.stringify(Object.assign({ key }, body)),
    });

  // ---- events: batched, sent as text/plain beacons (no CORS preflight) -----------------------
  let queue = [];
  let timer;
  const send = (events) => {
    const url = endpoint + '/v1/events';
    const body = JSON.stringify({ key, events });
    let sent;
    try {
      sent = navigator.sendBeacon(url, new Blob([body], { type: 'text/plain' }));
    } catch (e) {}
    sent || fetch(url, { method: 'POST', body, keepalive: true, credentials: 'omit', headers: { 'Content-Type': 'text/plain' } }).catch(report);
  };
  const flush = async () => {
    clearTimeout(timer);
    timer = 0;
    while (queue.length) send(queue.splice(0, 100));
  };
  const track = (type, offer, extra) => {
    const event = { id: uuid(), type, token: offer.token, ts: Date.now(), visitor_id: visitor };
    queue.push(event);
    // A burst (e.g. many impressions in one task) coalesces into one flush at the end of the task.
    if (queue.length == 20) Promise.resolve().then(guard(flush));
    timer = timer || setTimeout(guard(flush), 5e3);
    emit(type, Object.assign({ offer, event }, extra));
  };

  // ---- impressions: >= 50% visible for 1 s, once per offer per page view, paused while hidden --
  const seen = new Set();
  const watched = new Set();
  const byNode = new WeakMap();
  const arm = (rec) => {
    clearTimeout(rec.t);
    rec.t =
      rec.v &&
      !doc.hidden &&
      setTimeout(
        guard(async () => {
          watched.delete(rec);
          observer.unobserve(rec.n);
          if (rec.n.isConnected && !seen.has(rec.id)) {
            seen.add(rec.id);
            track('impression', rec.o);
          }
        }),
        1e3
      );
  };
  const observer =
    win.IntersectionObserver &&
    new IntersectionObserver(
      guard(async (entries) =>
        entries.forEach((e) => {
          const rec = byNode.get(e.target);
          if (rec) {
            rec.v = e.isIntersecting && e.intersectionRatio >= 0.5;
            arm(rec);
          }
        })
      ),
      { threshold: 0.5 }
    );

  // ---- one offer ------------------------------------------------------------------------------
  let template;
  const defaultCard = (o, ctx) => {
    const n = el('li', 'offer');
    const link = el('a', 'link');
    const href = safeUrl(o.url);
    const img = safeUrl(o.image_url);
    const price = el('p', 'price');
    if (href) link.href = href;
    if (img) {
      const i = el('img', 'image');
      i.src = img;
      i.alt = o.title;
      i.loading = 'lazy';
      link.append(i);
    }
    link.append(el('span', 'title', o.title));
    n.append(link);
    if (o.items) {
      const parts = el('ul', 'bundle');
      o.items.forEach((it) => parts.append(el('li', 'part', it.title)));
      n.append(parts);
    }
    if (o.reason) n.append(el('p', 'reason', o.reason));
    if (o.discount_pct > 0 && o.price) {
      const was = el('s', 'was');
      was.append(el('span', 'sr', 'Was '), money(o.price));
      price.append(was, ' ');
    }
    price.append(el('span', 'now', money(o.offer_price || o.price)));
    if (o.discount_pct > 0) price.append(' ', el('span', 'badge', '-' + o.discount_pct + '%'));
    n.append(price);
    const acts = ctx.buttons ? [['accept', 'Add to order'], ['decline', 'No thanks']] : ctx.add && [['add', o.items ? 'Add all' : 'Add to cart']];
    if (acts) {
      const row = el('div', 'actions');
      acts.forEach(([a, label]) => {
        const b = el('button', a, label);
        b.type = 'button';
        // Two offers can sit side by side: name the product, starting with the visible label.
        b.setAttribute('aria-label', label + ': ' + o.title);
        b.dataset.offerAction = a;
        row.append(b);
      });
      n.append(row);
    }
    return n;
  };

  const MESSAGES = { 200: 'Added to your order', 202: 'Payment processing', 402: 'Payment declined', 410: 'This offer has expired' };
  const act = async (rec, action) => {
    const n = rec.n;
    const o = rec.o;
    const buttons = n.querySelectorAll('[data-offer-action]');
    const status = n.querySelector('[role=status]');
    const state = (s, disable, msg) => {
      n.dataset.state = s;
      buttons.forEach((b) => (b.disabled = disable));
      if (msg != null) status.textContent = msg;
    };
    // Disabled buttons already swallow a second click; this also covers custom non-button controls.
    if (/pending|accepted|declined/.test(n.dataset.state)) return;
    state('pending', true, '');
    if (action == 'accept') {
      let res;
      let code;
      // 202: the charge's outcome is not known yet and the service settles it (within a minute);
      // the same key then answers the outcome, so ask again, less and less often.
      for (let wait = 1000, waited = 0; ; waited += wait, wait = Math.min(wait * 2, 8000)) {
        res = 0;
        try {
          // The Idempotency-Key was fixed when the offer was rendered: a retry can never charge twice.
          res = await post('accept', { token: o.token, quantity: 1 }, { 'Idempotency-Key': rec.k });
        } catch (e) {
          report(e);
        }
        code = res ? res.status : 0;
        if (code != 202 || waited > 60000) break;
        status.textContent = MESSAGES[202];
        await new Promise((r) => setTimeout(r, wait));
      }
      if (code == 200) {
        state('accepted', true, MESSAGES[200]);
        track('accept', o, { response: await res.json() });
      } else {
        // 402 and 410 are final for this key, and a charge still processing must not be
        // clicked again; anything else may be retried with the same key.
        state('error', code == 402 || code == 410 || code == 202, MESSAGES[code] || 'Something went wrong');
      }
    } else if (action == 'decline') {
      let downsell;
      try {
        const res = await post('decline', { token: o.token });
        downsell = res.ok && (await res.json()).downsell;
      } catch (e) {
        report(e);
      }
      // The shopper said no: honour it on screen even if the request failed.
      track('decline', o, { downsell });
      if (downsell && downsell.token) rec.li.replaceWith(build(downsell, rec.c));
      else state('declined', true, "Thanks, we won't show this again");
    }
  };

  const build = (o, ctx) => {
    let n;
    if (template) {
      try {
        n = template(o, Object.assign({ el, money, safeUrl }, ctx));
      } catch (e) {
        report(e);
      }
    }
    if (!(n && n.nodeType == 1)) n = defaultCard(o, ctx);
    n.dataset.offerId = o.offer_id;
    n.dataset.productId = o.product_id;
    if (!n.querySelector('[role=status]')) {
      const s = el('p', 'status');
      s.setAttribute('role', 'status');
      s.setAttribute('aria-live', 'polite');
      n.append(s);
    }
    let li = n;
    if (n.tagName != 'LI') {
      li = el('li', 'item');
      li.append(n);
    }
    const rec = { o, n, li, c: ctx, k: uuid(), id: o.offer_id || o.token };
    n.addEventListener(
      'click',
      guard(async (e) => {
        const t = e.target.closest('[data-offer-action],a');
        const a = t && n.contains(t) && (t.dataset.offerAction || 'click');
        if (a == 'add') {
          // The second click of a double click is not a second add.
          if (e.detail < 2) {
            track('add', o, { quantity: 1 });
            // Without a storefront handler, taking the offer means going to it, as its link does.
            const href = safeUrl(o.url);
            if (!listeners.add && href) location.href = href;
          }
        } else if (a == 'click') track(a, o);
        else if (a) await act(rec, a);
      })
    );
    if (observer && !seen.has(rec.id)) {
      byNode.set(n, rec);
      watched.add(rec);
      observer.observe(n);
    }
    return li;
  };

  // ---- one placement --------------------------------------------------------------------------
  const current = new WeakMap();
  const PARAMS = 'surface product_id items order_id order_token limit exclude customer_id'.split(' ');
  const render = async (place, ctx) => {
    ctx = ctx || {};
    const data = place.dataset;
    const stamp = {};
    current.set(place, stamp);
    const url = new URL(endpoint + '/v1/offers', location.href);
    const q = url.searchParams;
    q.set('key', key);
    PARAMS.forEach((p) => {
      let v = ctx[p] != null ? ctx[p] : data[p == 'surface' ? 'offers' : p.replace(/_(.)/g, (m, c) => c.toUpperCase())];
      if (v != null && v !== '') q.set(p, Array.isArray(v) ? v.join(',') : v);
    });
    q.set('visitor_id', visitor);
    const surface = q.get('surface');
    const res = await fetch(url, { credentials: 'omit' });
    // 404 (unknown product/order) is an expected answer: render nothing, report nothing.
    const body = res.status == 404 ? {} : res.ok && (await res.json());
    if (current.get(place) != stamp) return; // a newer render of this placement won
    place.textContent = '';
    if (!body) throw Error('offers: HTTP ' + res.status);
    const list = body.holdout ? [] : body.offers || [];
    const buttons = surface == 'thank_you' || (surface == 'checkout' && (ctx.accept || 'accept' in data));
    // Every other surface is pre-purchase (product_page, cart, checkout): its offers can be added.
    const opts = { surface, buttons, add: !buttons };
    const ship = body.free_shipping;
    if (ship) {
      // A <label> around the <progress> gives the bar its accessible name; CSS sizes it (no inline style).
      const line = el('label', 'ship', 'Spend ' + money(ship.remaining) + ' more for free shipping');
      const bar = el('progress', 'bar');
      bar.value = (bar.max = ship.threshold.amount) - ship.remaining.amount;
      line.dataset.offerFreeShipping = '';
      line.append(bar);
      place.append(line);
    }
    if (list.length) {
      const ul = el('ul', 'list');
      list.forEach((o) => ul.append(build(o, opts)));
      place.append(ul);
    }
    emit('render', { element: place, surface, offers: list, holdout: !!body.holdout });
  };

  // ---- the public function --------------------------------------------------------------------
  // offers() itself is async, so every method's result (or throw) reaches the caller as a promise.
  const api = {
    render,
    on: (type, fn) => (listeners[type] = listeners[type] || []).push(fn),
    template: (fn) => (template = fn),
    identify: remember,
    // Resolves to the visitor id; a callback also works through the queue stub, before the script loads.
    visitorId: (fn) => (fn && fn(visitor), visitor),
  };
  const offers = guard(async (method, ...args) => api[method](...args));
  offers.v = 1;
  win.offers = offers;
  ((prev && prev.q) || []).forEach((args) => offers(...args));

  // The stylesheet sits next to the script; a merchant <link> (e.g. with SRI) or data-css="off" skips it.
  if (script && script.src && conf.css != 'off' && !doc.querySelector('link[href*="offers.css"]')) {
    const link = el('link');
    link.rel = 'stylesheet';
    link.href = new URL('offers.css', script.src).href;
    doc.head.prepend(link);
  }

  const auto = guard(async () => doc.querySelectorAll('[data-offers]').forEach((p) => current.has(p) || offers('render', p)));
  doc.readyState == 'loading' ? doc.addEventListener('DOMContentLoaded', auto) : auto();
  doc.addEventListener(
    'visibilitychange',
    guard(async () => {
      watched.forEach(arm);
      if (doc.hidden) await flush();
    })
  );
  win.addEventListener('pagehide', guard(flush));
})();
