// Loads the built snippet into a happy-dom window with a recording fetch, sendBeacon and
// IntersectionObserver, so tests drive it the way a storefront page would.
import { readFileSync } from 'node:fs';
import { Window } from 'happy-dom';

export const BUILT = new URL('../../offer_service/static/sdk/v1/offers.js', import.meta.url);
export const SOURCE = new URL('../src/offers.js', import.meta.url);
export const STUB = 'window.offers=window.offers||function(){(offers.q=offers.q||[]).push(arguments)};';
export const ENDPOINT = 'https://api.example';

const code = () => readFileSync(BUILT, 'utf8');

export const offer = (over = {}) => ({
  offer_id: 'off_1',
  product_id: 'sd-128',
  kind: 'cross_sell',
  rank: 1,
  title: '128 GB SD card',
  url: 'https://shop.example/products/sd-128',
  image_url: 'https://cdn.example/sd-128.jpg',
  reason: 'Frequently bought with Camera X100',
  price: { amount: 2999, currency: 'USD' },
  discount_pct: 10,
  offer_price: { amount: 2699, currency: 'USD' },
  token: 'tok_1',
  expires_at: '2026-11-25T18:00:00Z',
  ...over,
});

export const reply = (status, body) => ({ status, ok: status >= 200 && status < 300, json: async () => body });

/** Lets pending promise chains and zero-delay work run. */
export const settle = async () => {
  for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
};

/**
 * Builds a page and runs the snippet in it.
 * opts.html: body markup; opts.route(url, init) -> reply(...) answers fetch calls;
 * opts.before(window): runs after the queue stub and before the snippet (queue calls go here);
 * opts.beacon: 'ok' (default), 'false' (returns false) or 'missing'; opts.clock: fake timers.
 */
export async function page(opts = {}) {
  const w = new Window({
    url: opts.url || 'https://shop.example/products/camera',
    settings: {
      enableJavaScriptEvaluation: true,
      suppressInsecureJavaScriptEnvironmentWarning: true,
      disableErrorCapturing: true,
    },
  });
  const t = {
    w,
    doc: w.document,
    fetches: [],
    beacons: [],
    observers: [],
    errors: [],
    hidden: false,
  };
  const route = opts.route || (() => reply(200, { holdout: false, offers: [offer()] }));
  w.fetch = async (url, init = {}) => {
    const call = { url: new URL(String(url)), init };
    t.fetches.push(call);
    return route(call.url, init);
  };
  const beacon = opts.beacon || 'ok';
  Object.defineProperty(w.navigator, 'sendBeacon', {
    configurable: true,
    value:
      beacon == 'missing'
        ? undefined
        : (url, blob) => {
            t.beacons.push({ url, blob });
            return beacon == 'ok';
          },
  });
  w.IntersectionObserver = class {
    constructor(cb, options) {
      this.cb = cb;
      this.options = options;
      this.targets = new Set();
      t.observers.push(this);
    }
    observe(el) {
      this.targets.add(el);
    }
    unobserve(el) {
      this.targets.delete(el);
    }
  };
  Object.defineProperty(w.document, 'hidden', { configurable: true, get: () => t.hidden });
  if (opts.clock) {
    const clock = { now: 0, timers: new Map(), seq: 0 };
    w.setTimeout = (fn, ms = 0) => (clock.timers.set(++clock.seq, { fn, at: clock.now + ms }), clock.seq);
    w.clearTimeout = (id) => clock.timers.delete(id);
    clock.tick = async (ms) => {
      const end = clock.now + ms;
      for (;;) {
        const due = [...clock.timers].filter(([, x]) => x.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
        if (!due) break;
        clock.timers.delete(due[0]);
        clock.now = due[1].at;
        due[1].fn();
        await settle();
      }
      clock.now = end;
    };
    t.clock = clock;
  }
  if (opts.storageThrows) {
    Object.defineProperty(w, 'localStorage', {
      configurable: true,
      get() {
        throw new w.DOMException('denied', 'SecurityError');
      },
    });
  }
  w.document.body.innerHTML = opts.html || '';
  t.run = (src) => {
    const s = w.document.createElement('script');
    s.textContent = src;
    w.document.head.append(s);
  };
  w.__errors = t.errors;
  if (opts.stub !== false) {
    t.run(STUB);
    t.run('offers("on","error",function(e){window.__errors.push(e)})');
  }
  if (opts.before) opts.before(w);
  t.include = () => {
    const s = w.document.createElement('script');
    s.dataset.key = 'pk_test';
    if (opts.endpoint !== '') s.dataset.endpoint = opts.endpoint || ENDPOINT;
    Object.assign(s.dataset, opts.data || {});
    s.textContent = code();
    w.document.head.append(s);
  };
  t.include();
  await settle();
  t.$ = (sel) => w.document.querySelector(sel);
  t.$$ = (sel) => [...w.document.querySelectorAll(sel)];
  t.events = async () => {
    const out = [];
    for (const b of t.beacons) out.push(JSON.parse(await b.blob.text()));
    return out;
  };
  t.see = (el, ratio) => {
    for (const o of t.observers) {
      if (o.targets.has(el)) o.cb([{ target: el, isIntersecting: ratio > 0, intersectionRatio: ratio }], o);
    }
  };
  t.setHidden = (hidden) => {
    t.hidden = hidden;
    w.document.dispatchEvent(new w.Event('visibilitychange'));
  };
  t.close = () => w.happyDOM.close();
  return t;
}
