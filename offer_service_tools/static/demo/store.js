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
