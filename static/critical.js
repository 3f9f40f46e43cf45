/* The Critical page's live timers: how long each item has been open, and when its next step is due. */
(function () {
  "use strict";
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function span(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    var h = Math.floor(s / 3600);
    return (h ? h + ":" : "") + pad(Math.floor((s % 3600) / 60)) + ":" + pad(s % 60);
  }
  function tick() {
    var now = Date.now();
    document.querySelectorAll(".timer[data-since]").forEach(function (el) {
      el.textContent = span(now - Date.parse(el.dataset.since));
    });
    document.querySelectorAll(".timer[data-due]").forEach(function (el) {
      var left = Date.parse(el.dataset.due) - now;
      el.textContent = left > 0 ? "in " + span(left) : "due now";
    });
  }
  tick();
  setInterval(tick, 1000);
})();
