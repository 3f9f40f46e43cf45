// The staff live socket: the server pushes figures every second; this page never polls.
// Updates every [data-stat] element, the throughput chart, and a watched send's delivery state.
(function () {
  'use strict';
  var root = document.querySelector('[data-live]');
  if (!root) { return; }
  var stateLabel = document.querySelector('[data-live-state]');
  var canvas = document.getElementById('throughput');
  var watchId = root.getAttribute('data-watch');
  var retryMs = 1000;

  function formatValue(format, value) {
    if (format === 'size') { return (value / (1024 * 1024)).toFixed(1) + ' MiB'; }
    if (format === 'duration') {
      var h = Math.floor(value / 3600), m = Math.floor((value % 3600) / 60), s = value % 60;
      return h + 'h ' + String(m).padStart(2, '0') + 'm ' + String(s).padStart(2, '0') + 's';
    }
    return String(value);
  }

  function setLiveState(state, text) {
    if (!stateLabel) { return; }
    stateLabel.setAttribute('data-state', state);
    stateLabel.textContent = text;
  }

  function applyStats(stats) {
    document.querySelectorAll('[data-stat]').forEach(function (el) {
      var name = el.getAttribute('data-stat');
      if (!(name in stats)) { return; }
      el.setAttribute('data-value', String(stats[name]));
      el.textContent = formatValue(el.getAttribute('data-format'), stats[name]);
    });
  }

  function applyWatch(watch) {
    var holder = document.querySelector('[data-delivery-state]');
    if (!holder || !watch || watch.id !== watchId) { return; }
    holder.setAttribute('data-delivery-state', watch.state);
    var badge = document.createElement('span');
    badge.className = 'badge state-' + watch.state;
    badge.textContent = watch.state;
    holder.replaceChildren(badge);
  }

  var presenceList = document.querySelector('[data-presence-feed]');
  var PRESENCE_SHOWN = 20;

  function applyPresence(events) {
    if (!presenceList || !events) { return; }
    events.forEach(function (event) {
      var item = document.createElement('li');
      item.setAttribute('data-presence-user', event.user_id);
      item.setAttribute('data-online', String(event.online));
      var time = event.at.slice(11, 19);
      // textContent: user ids are shown as text, never as markup.
      item.textContent = time + '  ' + event.user_id + (event.online ? ' came online' : ' went offline');
      presenceList.insertBefore(item, presenceList.firstChild);
    });
    while (presenceList.children.length > PRESENCE_SHOWN) { presenceList.removeChild(presenceList.lastChild); }
  }

  function drawChart(series) {
    if (!canvas || !series) { return; }
    var ctx = canvas.getContext('2d');
    var w = canvas.width, h = canvas.height, pad = 28;
    var all = series.sent.concat(series.delivered);
    var top = Math.max(1, Math.max.apply(null, all.length ? all : [0]));
    ctx.clearRect(0, 0, w, h);
    ctx.strokeStyle = '#d9e0e7';
    ctx.fillStyle = '#5b6b7b';
    ctx.font = '12px system-ui, sans-serif';
    ctx.lineWidth = 1;
    [0, 0.5, 1].forEach(function (f) {
      var y = h - pad - f * (h - 2 * pad);
      ctx.beginPath(); ctx.moveTo(pad, y); ctx.lineTo(w - 8, y); ctx.stroke();
      ctx.fillText(String(Math.round(top * f)), 2, y + 4);
    });
    ctx.fillText('60 s ago', pad, h - 8);
    ctx.fillText('now', w - 32, h - 8);
    function line(points, color) {
      if (!points.length) { return; }
      var step = (w - pad - 8) / 59, offset = 60 - points.length;
      ctx.strokeStyle = color; ctx.lineWidth = 2; ctx.beginPath();
      points.forEach(function (v, i) {
        var x = pad + (offset + i) * step, y = h - pad - (v / top) * (h - 2 * pad);
        if (i === 0) { ctx.moveTo(x, y); } else { ctx.lineTo(x, y); }
      });
      ctx.stroke();
    }
    line(series.sent, '#0b6e8a');
    line(series.delivered, '#2e9e5b');
  }

  function connect() {
    var scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    var ws = new WebSocket(scheme + '//' + location.host + '/dashboard/live');
    ws.onopen = function () {
      retryMs = 1000;
      setLiveState('live', 'live');
      if (watchId) { ws.send(JSON.stringify({ type: 'watch', id: watchId })); }
    };
    ws.onmessage = function (event) {
      var msg = JSON.parse(event.data);
      if (msg.type !== 'stats') { return; }
      applyStats(msg.stats);
      drawChart(msg.series);
      applyWatch(msg.watch);
      applyPresence(msg.presence);
    };
    ws.onclose = function (event) {
      if (event.code === 4001) {  // the sign-in session ended (logout, expiry)
        location.assign('/dashboard/login');
        return;
      }
      setLiveState('offline', 'reconnecting…');
      setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, 15000);
    };
  }
  connect();
}());
