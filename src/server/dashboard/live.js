// heal's dashboard: refreshes a page in place. A page whose <main> has
// data-refresh="N" is fetched again every N seconds and its <main> swapped
// for the new one, so a running op's output grows and states change without
// a reload. Nothing happens while the reader types in a field, has text
// selected, or the tab is hidden. Output that was scrolled to its end stays
// at its end. Without this script the page carries a <meta refresh>.
(function () {
  'use strict';

  var failures = 0;

  function seconds() {
    var main = document.querySelector('main[data-refresh]');
    var n = main ? parseInt(main.getAttribute('data-refresh'), 10) : 0;
    return n > 0 ? n : 0;
  }

  function busy() {
    var el = document.activeElement;
    if (el && /^(INPUT|SELECT|TEXTAREA|BUTTON)$/.test(el.tagName)) {
      return true;
    }
    var sel = window.getSelection && window.getSelection();
    return !!(sel && String(sel).length > 0);
  }

  function schedule() {
    var n = seconds();
    if (n > 0) {
      var wait = n * 1000 * Math.min(Math.pow(2, failures), 30);
      window.setTimeout(tick, wait);
    }
  }

  // Where each output box was scrolled: its end, or a position to keep.
  function scrolls(main) {
    var seen = {};
    main.querySelectorAll('pre[id]').forEach(function (pre) {
      var atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      seen[pre.id] = atEnd ? -1 : pre.scrollTop;
    });
    return seen;
  }

  function restore(main, seen) {
    main.querySelectorAll('pre[id]').forEach(function (pre) {
      var was = seen[pre.id];
      if (was === -1 || (was === undefined && pre.id.indexOf('live-') === 0)) {
        pre.scrollTop = pre.scrollHeight;
      } else if (was !== undefined) {
        pre.scrollTop = was;
      }
    });
  }

  function swap(text) {
    var doc = new DOMParser().parseFromString(text, 'text/html');
    var fresh = doc.querySelector('main');
    var main = document.querySelector('main');
    if (!fresh || !main) {
      return;
    }
    var seen = scrolls(main);
    main.replaceWith(document.importNode(fresh, true));
    restore(document.querySelector('main'), seen);
    if (doc.title) {
      document.title = doc.title;
    }
  }

  function tick() {
    if (document.hidden || busy()) {
      schedule();
      return;
    }
    fetch(window.location.href, { credentials: 'same-origin', cache: 'no-store' })
      .then(function (r) {
        if (r.redirected && new URL(r.url).pathname === '/login') {
          window.location.assign(r.url);
          return null;
        }
        if (!r.ok) {
          throw new Error('status ' + r.status);
        }
        return r.text();
      })
      .then(function (text) {
        failures = 0;
        if (text !== null) {
          swap(text);
        }
      })
      .catch(function () {
        failures += 1;
      })
      .then(schedule);
  }

  document.addEventListener('DOMContentLoaded', function () {
    restore(document.querySelector('main') || document.body, {});
    schedule();
  });
})();
