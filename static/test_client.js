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

  // Only web links become links (the server allows nothing else; a `javascript:` one never does).
  function link(url, label, cls) {
    if (!/^https?:\/\//i.test(url)) { return text('span', cls, label); }
    var a = text('a', cls, label);
    a.href = url;
    a.target = '_blank';
    a.rel = 'noopener noreferrer';
    return a;
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
    // Its portal link and actions, as the patient would see them: links open in a new tab; an
    // answer (confirm, decline...) is only shown here, never sent on the patient's behalf.
    if (typeof note.url === 'string') { item.appendChild(link(note.url, 'Open', 'n-url')); }
    (Array.isArray(note.actions) ? note.actions : []).forEach(function (action) {
      if (typeof action.url === 'string') {
        item.appendChild(link(action.url, action.label || '', 'n-action'));
      } else {
        var shown = text('span', 'n-action badge', (action.label || '') + ' (answer: ' + (action.action || '') + ')');
        shown.setAttribute('data-action', action.action || '');
        item.appendChild(shown);
      }
    });
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
