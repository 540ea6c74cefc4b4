// The demo shop's own script: a log of what the snippet does, in the page footer.
// It only uses the snippet's public API (through the queue stub) and textContent.
(function () {
  var log = document.querySelector('[data-activity-log]');
  function add(text) {
    if (!log) return;
    var item = document.createElement('li');
    item.textContent = new Date().toLocaleTimeString() + ' ' + text;
    log.append(item);
  }
  function title(detail) {
    return detail && detail.offer ? detail.offer.title : '';
  }
  offers('on', 'render', function (d) {
    add('render: ' + d.offers.length + ' offer(s) on ' + d.surface +
      (d.holdout ? ' (this visitor is in the holdout group: no offers by design)' : ''));
    // A demo visitor in the store's control group would otherwise just see nothing.
    var el = d.element;
    if (d.holdout && el && !(el.nextElementSibling && el.nextElementSibling.dataset.holdoutNote != null)) {
      var note = document.createElement('p');
      note.className = 'holdout-note';
      note.dataset.holdoutNote = '';
      note.textContent = 'Your browser is in the store\'s holdout group, which sees no offers ' +
        'so that their effect can be measured. Remove offers_vid from this site\'s local ' +
        'storage and reload to be assigned again.';
      el.after(note);
    }
  });
  // Taking a pre-purchase offer, as a merchant's cart does it: the add button hands over the
  // offer; the shop's server redeems its token for this cart (the price comes from there,
  // never from the page) and puts the item in the cart. A bundle's token adds every item.
  offers('on', 'add', function (d) {
    add('add: ' + title(d));
    return fetch('/demo/cart/offers', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ token: d.offer.token }),
      credentials: 'same-origin'
    }).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) {
          add('not added: ' + title(d) + ' (' + body.code + ': ' + body.message + ')');
          return;
        }
        add('added to the cart: ' + title(d));
        var here = location.pathname;
        location.assign(here === '/demo/checkout' ? here : '/demo/cart');
      });
    });
  });
  offers('on', 'impression', function (d) { add('impression: ' + title(d)); });
  offers('on', 'click', function (d) { add('click: ' + title(d)); });
  offers('on', 'accept', function (d) {
    add('accepted: ' + title(d) + ' (charge ' + (d.response && d.response.charge_id) + ')');
  });
  offers('on', 'decline', function (d) {
    add('declined: ' + title(d) + (d.downsell ? '; downsell offered: ' + d.downsell.title : ''));
  });
  offers('on', 'error', function (e) { add('error: ' + (e && e.message)); });
})();
