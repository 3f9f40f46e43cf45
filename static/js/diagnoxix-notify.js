/*
 * Diagnoxix Notify browser SDK (protocol v1, docs/protocol.md).
 *
 * Plain script:  <script src="/static/js/diagnoxix-notify.js"></script>  ->  window.DiagnoxixNotify
 * ES module:     import { connect } from "/static/js/diagnoxix-notify.mjs";
 * CommonJS:      const { connect } = require("./diagnoxix-notify.js");
 *
 *   const notify = DiagnoxixNotify.connect({
 *     url: "wss://notify.clinic.example/v1/ws/notifications",
 *     getToken: () => fetch("/api/notify-token").then((r) => r.text()),   // your backend mints it
 *   });
 *   notify.on("notification", (n) => show(n));       // each notification once, in seq order
 *   notify.on("unread", (count) => setBadge(count));  // follows read state across devices
 *   notify.on("retracted", (c) => render(notify.notifications()));  // sent in error: gone
 *   notify.on("updated", (n) => render(notify.notifications()));    // new title/message
 *   notify.on("acknowledged", (a) => render(notify.notifications()));  // a critical item closed
 *   notify.on("state", (state) => setOnline(state === "open"));
 *   notify.acknowledge(id);  // a person acknowledges a critical item (docs/critical.md)
 *   li.onclick = () => notify.openLink(n);            // opens `n.url` (if any) in a new tab
 *   button.onclick = () => notify.answer(n.id, "confirm");  // one of `n.actions`, as this user
 *   DiagnoxixNotify.showNotification(n);              // a system notification; a click opens `n.url`
 *
 * The SDK resumes from the last seq it saw (kept in localStorage), acknowledges what it delivered
 * to the application, drops duplicates by id, answers token refresh requests, and reconnects with
 * exponential backoff and full jitter. It holds the notifications it delivered (newest first,
 * `notifications()`), removes a retracted one and replaces an updated one's words.
 *
 * Where a proxy strips the WebSocket upgrade (the socket fails before it opens, `sseAfterFailures`
 * times in a row), it receives the same frames over server-sent events (`/v1/sse/notifications`),
 * acknowledges and marks read over HTTP, tries the WebSocket again every `wsRetryMs` and goes back
 * to it once one opens: the cursor (seq) carries over, and duplicates are dropped by id.
 * A notification may carry a portal `url` and up to three `actions` (`{label, url}` or
 * `{label, action}`); the server only lets through https links to the clinic's own hosts. The
 * SDK never renders HTML: show `title`, `message` and labels as text.
 */
(function (root, factory) {
  "use strict";
  var api = factory();
  if (typeof module === "object" && module && module.exports) {
    module.exports = api;
  } else {
    root.DiagnoxixNotify = api;
  }
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";

  var SUBPROTOCOL = "diagnoxix.v1";
  // Ids remembered to drop redelivered duplicates (at-least-once delivery from the server).
  var SEEN_LIMIT = 5000;
  // Notifications held for `notifications()`, newest first; older ones drop off the end.
  var HOLD_LIMIT = 500;
  // Acks are grouped into one frame per short interval.
  var ACK_DELAY_MS = 50;
  var ACK_BATCH = 100;
  // Close codes where retrying cannot help without a change (policy, frame too big).
  var FATAL_CODES = { 1008: true, 1009: true };
  // The token expired without a refresh, or was revoked: reconnect only with a way to get a fresh
  // one (the same token would be refused).
  var TOKEN_EXPIRED = 4001;
  var TOKEN_REVOKED = 4003;
  // A failed token refresh is tried again after this long (the server allows a grace period).
  var REFRESH_RETRY_MS = 5000;
  var WEBSOCKET = "websocket";
  var SSE = "sse";
  var EVENTSOURCE_CLOSED = 2;

  function tokenSubject(token) {
    // Only to namespace the stored cursor per user; the server verifies the token.
    try {
      var part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(part)).sub || null;
    } catch (e) {
      return null;
    }
  }

  function defaultUrl() {
    var loc = typeof location !== "undefined" ? location : null;
    if (!loc) throw new Error("DiagnoxixNotify: pass options.url");
    return (loc.protocol === "https:" ? "wss://" : "ws://") + loc.host + "/v1/ws/notifications";
  }

  // The SSE endpoint beside a WebSocket endpoint: same host, http(s) for ws(s).
  function sseUrlFor(wsUrl) {
    return wsUrl.replace(/^ws(s?):/, "http$1:").replace("/v1/ws/notifications", "/v1/sse/notifications");
  }

  // Only web links are ever opened (the server allows https to the clinic's hosts; a dev server
  // also http to localhost): a `javascript:` or `data:` value is never followed.
  var WEB_LINK = /^https?:\/\/[^\s]+$/i;

  /** Open a notification's `url` (or an action's, or a link given as a string) in a new tab,
   * without giving it this page (`noopener`). Returns false when there is no link to open. */
  function openLink(target) {
    var url = typeof target === "string" ? target : target && target.url;
    if (typeof url !== "string" || !WEB_LINK.test(url) || typeof window === "undefined") return false;
    window.open(url, "_blank", "noopener,noreferrer");
    return true;
  }

  /** A system notification (the Notifications API, once the user allowed it) whose click opens
   * the notification's `url`. Returns it, or null where notifications are unavailable. */
  function showNotification(note) {
    if (typeof Notification === "undefined" || Notification.permission !== "granted") return null;
    var shown = new Notification(note.title || "", { body: note.message || "", tag: note.id });
    shown.onclick = function () {
      openLink(note);
      shown.close();
    };
    return shown;
  }

  function memoryStorage() {
    var data = {};
    return {
      getItem: function (k) { return Object.prototype.hasOwnProperty.call(data, k) ? data[k] : null; },
      setItem: function (k, v) { data[k] = String(v); },
      removeItem: function (k) { delete data[k]; },
    };
  }

  function Connection(options) {
    if (!options || (!options.token && !options.getToken && !options.userId)) {
      throw new Error("DiagnoxixNotify: pass options.token, options.getToken or (dev only) options.userId");
    }
    this.options = options;
    this.url = options.url || defaultUrl();
    this.sseUrl = options.sseUrl || sseUrlFor(this.url);
    // The HTTP API (acks, read marks, history while on SSE): the SSE endpoint's origin.
    this._apiBase = this.sseUrl.replace(/\/v1\/sse\/notifications.*$/, "");
    this.sseAfterFailures = options.sseAfterFailures || 2;
    this.wsRetryMs = options.wsRetryMs || 60000;
    this.transport = WEBSOCKET;
    this.autoAck = options.autoAck !== false;
    this.baseBackoffMs = options.baseBackoffMs || 500;
    this.maxBackoffMs = options.maxBackoffMs || 30000;
    this.storage = options.storage || (typeof localStorage !== "undefined" ? localStorage : memoryStorage());
    this.state = "idle";
    this.unreadCount = null;
    this.lastSeq = null;
    this.epoch = null;
    this.welcome = null;
    this.connections = 0;
    this._listeners = {};
    this._seen = new Set();
    this._held = [];
    this._seenOrder = [];
    this._acks = [];
    this._ackTimer = null;
    this._pending = {};
    this._requests = 0;
    this._ws = null;
    this._attempt = 0;
    this._retryTimer = null;
    this._closed = false;
    this._storageKey = null;
    // The SSE fallback: its EventSource, WebSocket attempts that failed before opening (in a
    // row), and the WebSocket tried again while on SSE (with its timer).
    this._es = null;
    this._wsFailures = 0;
    this._probe = null;
    this._probeTimer = null;
    this._probeSoon = false;
    // The token of the current connection, for HTTP calls while on SSE.
    this._currentToken = null;
  }

  Connection.prototype.on = function (event, callback) {
    (this._listeners[event] = this._listeners[event] || []).push(callback);
    return this;
  };

  Connection.prototype.off = function (event, callback) {
    var list = this._listeners[event] || [];
    var i = list.indexOf(callback);
    if (i >= 0) list.splice(i, 1);
    return this;
  };

  Connection.prototype._emit = function (event, value) {
    var list = (this._listeners[event] || []).slice();
    for (var i = 0; i < list.length; i++) {
      try {
        list[i](value);
      } catch (e) {
        if (typeof console !== "undefined") console.error("DiagnoxixNotify listener failed", e);
      }
    }
  };

  Connection.prototype._setState = function (state) {
    if (this.state === state) return;
    this.state = state;
    this._emit("state", state);
  };

  Connection.prototype._token = function () {
    var o = this.options;
    // new Promise: a getToken that throws synchronously rejects instead of breaking reconnects.
    return new Promise(function (resolve) {
      resolve(o.getToken ? o.getToken() : o.token || null);
    });
  };

  Connection.prototype._loadCursor = function (subject) {
    this._storageKey = "diagnoxix-notify:" + (subject || "anonymous");
    if (this.lastSeq !== null) return;
    try {
      var saved = JSON.parse(this.storage.getItem(this._storageKey) || "null");
      if (saved && typeof saved.seq === "number") {
        this.lastSeq = saved.seq;
        this.epoch = saved.epoch || null;
      }
    } catch (e) {
      /* an unreadable cursor is no cursor */
    }
  };

  Connection.prototype._saveCursor = function () {
    if (!this._storageKey || this.lastSeq === null) return;
    try {
      this.storage.setItem(this._storageKey, JSON.stringify({ seq: this.lastSeq, epoch: this.epoch }));
    } catch (e) {
      /* storage full or denied: resume still works within this page */
    }
  };

  Connection.prototype.open = function () {
    var self = this;
    if (self._closed) return self;
    self._setState(self.connections ? "reconnecting" : "connecting");
    self._token().then(
      function (token) {
        self._currentToken = token || null;
        self._dial(token);
      },
      function () { self._scheduleRetry(); }
    );
    return self;
  };

  Connection.prototype._dial = function (token) {
    // Closed, or already connected by the other way (a retry that lost a race with the WebSocket
    // tried while on SSE taking over).
    if (this._closed || (this.transport === SSE ? this._es : this._ws)) return;
    this._loadCursor(token ? tokenSubject(token) : this.options.userId);
    if (this.transport === SSE) this._dialSse(token);
    else this._dialWs(token, false);
  };

  // The query both transports take: credentials (SSE only: a WebSocket sends its token as a
  // subprotocol) and the cursor.
  Connection.prototype._query = function (base, token, withToken) {
    var query = [];
    if (token && withToken) query.push("token=" + encodeURIComponent(token));
    if (!token && this.options.userId) query.push("user_id=" + encodeURIComponent(this.options.userId));
    if (this.lastSeq !== null) {
      query.push("since=" + this.lastSeq);
      if (this.epoch) query.push("epoch=" + encodeURIComponent(this.epoch));
    }
    return base + (query.length ? (base.indexOf("?") >= 0 ? "&" : "?") + query.join("&") : "");
  };

  /**
   * A WebSocket: the connection itself, or (`probe`) one tried while on SSE, which takes over
   * once its welcome arrives (and, failing, leaves the SSE stream as it is).
   */
  Connection.prototype._dialWs = function (token, probe) {
    var self = this;
    var protocols = token ? [SUBPROTOCOL, "bearer." + token] : [SUBPROTOCOL];
    var opened = false;
    var ws;
    try {
      ws = new WebSocket(self._query(self.url, token, false), protocols);
    } catch (e) {
      if (probe) self._scheduleProbe();
      else self._wsFailed();
      return;
    }
    if (probe) self._probe = ws;
    else self._ws = ws;
    ws.onopen = function () {
      opened = true;
      if (!probe) self.connections += 1;
      if (self.lastSeq === null) ws.send(JSON.stringify({ type: "hello" }));
    };
    ws.onmessage = function (event) {
      var frame;
      try {
        frame = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      if (self._probe === ws && frame.type === "welcome") self._leaveSse(ws);
      self._onFrame(ws, frame);
    };
    ws.onclose = function (event) {
      if (self._probe === ws) {
        // The WebSocket still cannot be established: stay on SSE, try again later.
        self._probe = null;
        self._scheduleProbe();
        return;
      }
      if (self._ws !== ws) return;
      self._ws = null;
      self._failPending("connection closed");
      if (!opened && !self._closed) {
        self._wsFailed();
        return;
      }
      self._lost(event.code, event.reason);
    };
  };

  // A connection ended (`code`: the close code, or null when it was refused or dropped).
  Connection.prototype._lost = function (code, reason) {
    if (this._closed) {
      this._setState("closed");
      return;
    }
    var tokenGone = code === TOKEN_EXPIRED || code === TOKEN_REVOKED;
    if (FATAL_CODES[code] || (tokenGone && !this.options.getToken)) {
      this._setState("closed");
      this._emit("error", { code: code, reason: reason });
      return;
    }
    this._scheduleRetry();
  };

  // The WebSocket failed before it opened (refused, or a proxy stripped its upgrade).
  Connection.prototype._wsFailed = function () {
    this._wsFailures += 1;
    if (this._wsFailures >= this.sseAfterFailures && typeof EventSource !== "undefined") {
      this.transport = SSE;
      // The socket may have failed only because the server was restarting: once the stream is
      // up, the WebSocket is tried again at once (then every wsRetryMs).
      this._probeSoon = true;
      this._emit("transport", SSE);
    }
    this._scheduleRetry();
  };

  /** The same stream over server-sent events; the browser resumes it by itself with Last-Event-ID. */
  Connection.prototype._dialSse = function (token) {
    var self = this;
    var es;
    try {
      es = new EventSource(self._query(self.sseUrl, token, true));
    } catch (e) {
      self._scheduleRetry();
      return;
    }
    self._es = es;
    es.onmessage = function (event) {
      if (self._es !== es) return;
      var frame;
      try {
        frame = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      if (frame.type === "close") {
        // What a WebSocket's close code says (1001, 1013, 4001, 4003, ...).
        self._closeSse(es);
        self._lost(frame.code, frame.reason);
        return;
      }
      if (frame.type === "welcome") {
        self.connections += 1;
        self._scheduleProbe(self._probeSoon ? 0 : self.wsRetryMs);
        self._probeSoon = false;
      }
      self._onFrame(null, frame);
    };
    es.onerror = function () {
      if (self._es !== es) return;
      if (es.readyState === EVENTSOURCE_CLOSED) {
        // Refused (401, a proxy's 502, ...): the browser gave up; reconnect with a fresh token.
        self._closeSse(es);
        self._lost(null, null);
      } else {
        self._setState("reconnecting"); // the browser reconnects by itself, with Last-Event-ID
      }
    };
  };

  Connection.prototype._closeSse = function (es) {
    es.close();
    if (this._es === es) this._es = null;
  };

  Connection.prototype._scheduleProbe = function (delayMs) {
    var self = this;
    if (self._probeTimer || self._probe || self._closed || self.transport !== SSE) return;
    self._probeTimer = setTimeout(function () {
      self._probeTimer = null;
      if (self._closed || self.transport !== SSE) return;
      self._token().then(
        function (token) {
          if (!self._closed && self.transport === SSE && !self._probe) self._dialWs(token, true);
        },
        function () { self._scheduleProbe(); }
      );
    }, delayMs === undefined ? self.wsRetryMs : delayMs);
  };

  // The probe's welcome: the WebSocket takes over, from the cursor the probe was opened with
  // (what the stream delivered meanwhile comes again and is dropped by id).
  Connection.prototype._leaveSse = function (ws) {
    if (this._retryTimer) clearTimeout(this._retryTimer);
    this._retryTimer = null;
    this._probe = null;
    this._ws = ws;
    this._wsFailures = 0;
    this.transport = WEBSOCKET;
    this.connections += 1;
    if (this._es) this._closeSse(this._es);
    this._emit("transport", WEBSOCKET);
  };

  Connection.prototype._scheduleRetry = function () {
    var self = this;
    if (self._closed) return;
    self._setState("reconnecting");
    self._attempt += 1;
    // Full jitter: after a restart, clients do not all come back in the same instant.
    var cap = Math.min(self.maxBackoffMs, self.baseBackoffMs * Math.pow(2, self._attempt));
    self._retryTimer = setTimeout(function () {
      self._retryTimer = null;
      self.open();
    }, Math.random() * cap);
  };

  Connection.prototype._remember = function (id) {
    if (this._seen.has(id)) return false;
    this._seen.add(id);
    this._seenOrder.push(id);
    if (this._seenOrder.length > SEEN_LIMIT) this._seen.delete(this._seenOrder.shift());
    return true;
  };

  Connection.prototype._onFrame = function (ws, frame) {
    var self = this;
    var type = frame.type;
    if (type === "welcome") {
      self._attempt = 0;
      if (self.transport === WEBSOCKET) self._wsFailures = 0;
      self.welcome = frame;
      self.epoch = frame.epoch;
      if (frame.recovered === false && frame.reason !== "expired") {
        // Our cursor means nothing on this server (database replaced or restored): adopt its
        // newest seq, or later notifications below our old cursor would be skipped.
        self.lastSeq = frame.last_seq;
      } else if (self.lastSeq === null || frame.last_seq > self.lastSeq) {
        self.lastSeq = frame.last_seq;
      }
      self._saveCursor();
      self._flushAcks();
      if (typeof frame.unread === "number") {
        self.unreadCount = frame.unread;
        self._emit("unread", frame.unread);
      }
      self._setState("open");
      self._emit("welcome", frame);
      return;
    }
    if (type === "unread") {
      self.unreadCount = frame.count;
      self._emit("unread", frame.count);
      return;
    }
    if (type === "refresh") {
      self._refresh(ws);
      return;
    }
    if (frame.request_id && self._pending[frame.request_id]) {
      var pending = self._pending[frame.request_id];
      delete self._pending[frame.request_id];
      if (type === "error") pending.reject(frame.error);
      else pending.resolve(frame);
      return;
    }
    if (type === "error") {
      self._emit("error", frame.error);
      return;
    }
    if (type === "retracted" || type === "updated" || type === "acknowledged") {
      self._correct(frame);
      return;
    }
    if (typeof frame.seq === "number" && typeof frame.id === "string") {
      var fresh = self._remember(frame.id);
      if (self.autoAck) self._ack(frame.id);
      if (!fresh) return;
      if (self.lastSeq === null || frame.seq > self.lastSeq) {
        self.lastSeq = frame.seq;
        self._saveCursor();
      }
      self._hold(frame);
      self._emit("notification", frame);
      // A new unread notification of the user's own raises the badge at once; the server's
      // count (welcome, unread frames) stays the reference whenever read state changes.
      if (frame.read === false && frame.user_id !== "*" && self.unreadCount !== null) {
        self.unreadCount += 1;
        self._emit("unread", self.unreadCount);
      }
    }
  };

  Connection.prototype._hold = function (note) {
    var held = this._held;
    var at = 0;
    while (at < held.length && held[at].seq > note.seq) at++;
    held.splice(at, 0, note);
    if (held.length > HOLD_LIMIT) held.pop();
  };

  Connection.prototype._find = function (id) {
    for (var i = 0; i < this._held.length; i++) if (this._held[i].id === id) return i;
    return -1;
  };

  /**
   * A correction (docs/protocol.md): an event with its own seq in the user's stream. `retracted`:
   * the notification was sent in error; it is dropped from what we hold (and never shown again,
   * even if redelivered). `updated`: its title and message are replaced. Either way the app hears
   * of it ("retracted" with { id, seq, notification } where notification is what we held or null;
   * "updated" with the updated notification, or the frame when we held none).
   */
  Connection.prototype._correct = function (frame) {
    if (typeof frame.seq !== "number" || typeof frame.id !== "string") return;
    if (!this._remember(frame.type + ":" + frame.seq)) return;
    if (this.lastSeq === null || frame.seq > this.lastSeq) {
      this.lastSeq = frame.seq;
      this._saveCursor();
    }
    var at = this._find(frame.id);
    if (frame.type === "acknowledged") {
      // A critical item was acknowledged (by this person or another): this copy is closed.
      var held = at >= 0 ? this._held[at] : null;
      var closed = { by: frame.by, at: frame.acknowledged_at, critical_id: frame.critical_id, on_behalf: frame.on_behalf };
      if (held) held.acknowledged = closed;
      this._emit("acknowledged", { id: frame.id, seq: frame.seq, critical_id: frame.critical_id,
        by: frame.by, on_behalf: frame.on_behalf, acknowledged_at: frame.acknowledged_at, notification: held });
      return;
    }
    if (frame.type === "retracted") {
      this._remember(frame.id); // a late copy of it is not shown
      var gone = at >= 0 ? this._held.splice(at, 1)[0] : null;
      this._emit("retracted", { id: frame.id, seq: frame.seq, notification: gone });
      return;
    }
    var note = at >= 0 ? this._held[at] : null;
    if (note) {
      note.title = frame.title;
      note.message = frame.message;
    }
    this._emit("updated", note || frame);
  };

  /** The notifications delivered so far, newest first (a copy; at most 500). */
  Connection.prototype.notifications = function () {
    return this._held.slice();
  };

  Connection.prototype._refresh = function (ws) {
    var self = this;
    if (!self.options.getToken || !ws) return; // a fixed token cannot be renewed; it expires with 4001
    self._token().then(
      function (token) {
        if (token) self._currentToken = token;
        if (token && ws.readyState === 1) ws.send(JSON.stringify({ type: "token", token: token }));
      },
      function () {
        setTimeout(function () {
          if (ws.readyState === 1) self._refresh(ws);
        }, REFRESH_RETRY_MS);
      }
    );
  };

  Connection.prototype._ack = function (id) {
    var self = this;
    self._acks.push(id);
    if (self._ackTimer) return;
    self._ackTimer = setTimeout(function () {
      self._ackTimer = null;
      self._flushAcks();
    }, ACK_DELAY_MS);
  };

  Connection.prototype._flushAcks = function () {
    var self = this;
    var ws = self._ws;
    while (self._acks.length && ws && ws.readyState === 1) {
      ws.send(JSON.stringify({ type: "ack", ids: self._acks.splice(0, ACK_BATCH) }));
    }
    // On SSE: over HTTP with the user's token (a --dev userId has none: nothing is acknowledged,
    // and the cursor alone keeps what was shown from coming again).
    while (self._acks.length && self.transport === SSE && self._es && self.welcome && self._currentToken) {
      self._httpAck(self._acks.splice(0, ACK_BATCH));
    }
  };

  // An ack lost to the network or a server restart is sent again with the next flush (at the
  // latest after the next welcome); one the server refused (4xx) is not.
  Connection.prototype._httpAck = function (ids) {
    var self = this;
    self._http("POST", "/notifications/ack", { ids: ids }).catch(function (error) {
      if (!error || !error.status || error.status >= 500 || error.status === 429) {
        self._acks = ids.concat(self._acks);
      }
    });
  };

  /** An HTTP call on the user's own path (`/v1/users/{user_id}...`) with their token. */
  Connection.prototype._http = function (method, path, body) {
    if (!this.welcome) return Promise.reject(new Error("not connected"));
    return this._fetch(method, "/v1/users/" + encodeURIComponent(this.welcome.user_id) + path, body);
  };

  /** An HTTP call to `/v1/...` with the user's token (the server checks it is theirs). */
  Connection.prototype._fetch = function (method, path, body) {
    var token = this._currentToken;
    if (!token || !this.welcome) return Promise.reject(new Error("not connected"));
    var init = { method: method, headers: { Authorization: "Bearer " + token } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(this._apiBase + path, init).then(function (response) {
      return response.json().then(function (data) {
        if (!response.ok) {
          var error = (data && data.error) || { message: "HTTP " + response.status };
          error.status = response.status;
          throw error;
        }
        return data;
      });
    });
  };

  Connection.prototype.ack = function (ids) {
    for (var i = 0; i < ids.length; i++) this._ack(ids[i]);
  };

  Connection.prototype._request = function (frame) {
    var self = this;
    var ws = self._ws;
    if (!ws || ws.readyState !== 1) return Promise.reject(new Error("not connected"));
    self._requests += 1;
    var id = "r" + self._requests;
    frame.request_id = id;
    return new Promise(function (resolve, reject) {
      self._pending[id] = { resolve: resolve, reject: reject };
      ws.send(JSON.stringify(frame));
    });
  };

  Connection.prototype._failPending = function (reason) {
    var pending = this._pending;
    this._pending = {};
    Object.keys(pending).forEach(function (id) { pending[id].reject(new Error(reason)); });
  };

  /** Mark notifications read; every connection of the user gets the new unread count. */
  Connection.prototype.markRead = function (ids) {
    if (this.transport === SSE) return this._http("POST", "/notifications/read", { ids: ids });
    return this._request({ type: "read", ids: ids });
  };

  /**
   * A person acknowledges a critical item by one of their copies (docs/critical.md): it closes for
   * every recipient (each gets an "acknowledged" event). Resolves with { critical_id, changed, ... }.
   */
  Connection.prototype.acknowledge = function (id) {
    if (this.transport === SSE) {
      return this._fetch("POST", "/v1/notifications/" + encodeURIComponent(id) + "/acknowledgement", {});
    }
    return this._request({ type: "acknowledge", id: id });
  };

  /**
   * The user's channel preferences (docs/preferences.md), over HTTP with their token:
   * { time_zone, quiet_hours: {start, end} | null, channels: { "<type>" | "*": { push?, webhook? } },
   * critical_categories }. setPreferences replaces them whole; resetPreferences restores the defaults.
   */
  Connection.prototype.getPreferences = function () {
    return this._http("GET", "/preferences");
  };

  Connection.prototype.setPreferences = function (preferences) {
    return this._http("PUT", "/preferences", preferences);
  };

  Connection.prototype.resetPreferences = function () {
    return this._http("DELETE", "/preferences");
  };

  Connection.prototype.markAllRead = function () {
    if (this.transport === SSE) return this._http("POST", "/notifications/read-all");
    return this._request({ type: "read_all" });
  };

  /**
   * A page of history, newest first: { before, limit, unread, type } -> { notifications, next_cursor }.
   * next_cursor is an integer seq (pass it as `before` for the next page), or null after the last page.
   */
  Connection.prototype.history = function (query) {
    var q = query || {};
    var frame = { type: "history" };
    if (q.before !== undefined && q.before !== null) frame.before = q.before;
    if (q.limit) frame.limit = q.limit;
    if (q.unread) frame.unread = true;
    if (q.type) frame.filter_type = q.type;
    if (this.transport === SSE) {
      var query = [];
      if (frame.limit) query.push("limit=" + frame.limit);
      if (frame.before !== undefined) query.push("before=" + frame.before);
      if (frame.unread) query.push("unread=true");
      if (frame.filter_type) query.push("type=" + encodeURIComponent(frame.filter_type));
      return this._http("GET", "/notifications" + (query.length ? "?" + query.join("&") : ""));
    }
    return this._request(frame);
  };

  /** Open a notification's `url` (see `openLink`). */
  Connection.prototype.openLink = function (note) {
    return openLink(note);
  };

  /** Answer one of a notification's actions (`{label, action}`) as this user, over HTTP with the
   * connection's token: resolves to `{id, user_id, action, answered_at, recorded}` (`recorded`
   * false: answered so before); rejects with the server's error (404: no such action; 409:
   * answered already, with another action). */
  Connection.prototype.answer = function (id, action) {
    var base = this._apiBase;
    var path = "/v1/notifications/" + encodeURIComponent(id) + "/actions/" + encodeURIComponent(action);
    return this._token().then(function (token) {
      if (!token) throw new Error("DiagnoxixNotify: answering needs a token");
      return fetch(base + path, { method: "POST", headers: { Authorization: "Bearer " + token } });
    }).then(function (resp) {
      return resp.json().then(function (body) {
        if (!resp.ok) throw body.error || new Error("HTTP " + resp.status);
        return body;
      });
    });
  };

  Connection.prototype.close = function () {
    this._closed = true;
    if (this._retryTimer) clearTimeout(this._retryTimer);
    if (this._probeTimer) clearTimeout(this._probeTimer);
    if (this._probe) this._probe.close(1000);
    if (this._es) this._closeSse(this._es);
    if (this._ws) this._ws.close(1000);
    else this._setState("closed");
  };

  // -- Web Push (docs/channels.md) ----------------------------------------------------------------

  var SERVICE_WORKER = "/static/js/diagnoxix-sw.js";

  function base64UrlBytes(text) {
    var b64 = text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4);
    var raw = atob(b64);
    var out = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out;
  }

  /**
   * Hand the service worker the user's credentials, so that it can fetch a pushed notification's
   * words (a push itself carries a generic title and the id). Kept in the worker's IndexedDB; call
   * again with each fresh token (tokens expire: the worker shows the generic text with an old one).
   */
  function pushCredentials(registration, options) {
    var worker = registration.active || registration.waiting || registration.installing;
    if (!worker) return;
    worker.postMessage({
      type: "diagnoxix-push-credentials",
      token: options.token,
      userId: options.userId,
      apiBase: options.apiBase || null,
      portalUrl: options.portalUrl || null,
    });
  }

  function pushApi(options, path, init) {
    var base = options.apiBase || "";
    init.headers = Object.assign({ Authorization: "Bearer " + options.token }, init.headers || {});
    return fetch(base + path, init).then(function (resp) {
      return resp.json().then(function (body) {
        if (!resp.ok) throw body.error || new Error("HTTP " + resp.status);
        return body;
      });
    });
  }

  /**
   * Web Push: registers the service worker, asks the browser for a push subscription with the
   * server's VAPID key, registers it for the user, and hands the worker the user's credentials.
   * options: { token, userId, apiBase (default: this page's origin), serviceWorker (default
   * "/static/js/diagnoxix-sw.js"), scope, portalUrl (where a click goes without a link) }.
   * Resolves to { subscription: the server's record, registration }. Needs a user gesture in some
   * browsers (Notification permission).
   */
  function enablePush(options) {
    if (!options || !options.token || !options.userId) {
      return Promise.reject(new Error("DiagnoxixNotify.enablePush: pass options.token and options.userId"));
    }
    if (typeof navigator === "undefined" || !navigator.serviceWorker || typeof PushManager === "undefined") {
      return Promise.reject(new Error("Web Push is not supported here"));
    }
    var user = encodeURIComponent(options.userId);
    var swOptions = options.scope ? { scope: options.scope } : undefined;
    var registration;
    return navigator.serviceWorker
      .register(options.serviceWorker || SERVICE_WORKER, swOptions)
      .then(function () { return navigator.serviceWorker.ready; })
      .then(function (ready) {
        registration = ready;
        pushCredentials(registration, options);
        return pushApi(options, "/v1/push/public-key", { method: "GET" });
      })
      .then(function (key) {
        return registration.pushManager.subscribe({
          userVisibleOnly: true,
          applicationServerKey: base64UrlBytes(key.public_key),
        });
      })
      .then(function (subscription) {
        return pushApi(options, "/v1/users/" + user + "/push-subscriptions", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify(subscription.toJSON()),
        });
      })
      .then(function (body) { return { subscription: body.subscription, registration: registration }; });
  }

  /**
   * Undo enablePush (sign-out): the browser unsubscribes, the server forgets the subscription
   * (`subscriptionId` from enablePush), and the worker forgets the credentials.
   */
  function disablePush(options) {
    var user = encodeURIComponent(options.userId);
    return navigator.serviceWorker.getRegistration(options.scope || options.serviceWorker || SERVICE_WORKER)
      .then(function (registration) {
        if (!registration) return null;
        var worker = registration.active;
        if (worker) worker.postMessage({ type: "diagnoxix-push-forget" });
        return registration.pushManager.getSubscription();
      })
      .then(function (subscription) { return subscription ? subscription.unsubscribe() : null; })
      .then(function () {
        if (!options.subscriptionId) return null;
        return pushApi(options, "/v1/users/" + user + "/push-subscriptions/" + options.subscriptionId, {
          method: "DELETE",
        });
      });
  }

  function connect(options) {
    return new Connection(options).open();
  }

  return {
    connect: connect,
    Connection: Connection,
    SUBPROTOCOL: SUBPROTOCOL,
    openLink: openLink,
    showNotification: showNotification,
    enablePush: enablePush,
    disablePush: disablePush,
    pushCredentials: pushCredentials,
  };
});
