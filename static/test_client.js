// The built-in test client: connects as the chosen user with the short-lived token the server
// minted, exactly as a patient portal would, and lists what arrives. Text only, never HTML.
(function () {
  'use strict';
  var box = document.getElementById('test-client');
  if (!box) { return; }
  var token = box.getAttribute('data-token');
  var inbox = box.querySelector('[data-inbox]');
  var state = box.querySelector('[data-client-state]');
  var scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  // A plain client (like the seed's): only notification frames arrive, the token rides in the
  // subprotocol header, never in the URL.
  var ws = new WebSocket(scheme + '//' + location.host + '/v1/ws/notifications', ['bearer.' + token]);

  function text(tag, cls, value) {
    var el = document.createElement(tag);
    el.className = cls;
    el.textContent = value;
    return el;
  }

  ws.onopen = function () {
    state.textContent = 'connected';
    state.setAttribute('data-state', 'connected');
  };
  ws.onmessage = function (event) {
    var note = JSON.parse(event.data);
    var item = document.createElement('li');
    item.setAttribute('data-notification', note.id || '');
    item.appendChild(text('span', 'n-title', note.title || ''));
    item.appendChild(text('span', 'n-message', note.message || ''));
    item.appendChild(text('span', 'meta', (note.type || '') + ' · ' + (note.priority || '') + ' · ' + (note.timestamp || '')));
    inbox.prepend(item);
  };
  ws.onclose = function (event) {
    state.textContent = 'closed (' + event.code + ')';
    state.setAttribute('data-state', 'closed');
  };
  var button = box.querySelector('[data-disconnect]');
  button.addEventListener('click', function () { ws.close(1000, 'closed by staff'); });
  setInterval(function () {
    if (ws.readyState === WebSocket.OPEN) { ws.send(JSON.stringify({ type: 'ping' })); }
  }, 30000);
}());
