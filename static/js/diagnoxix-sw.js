/*
 * Diagnoxix Notify service worker: shows Web Push notifications (docs/channels.md).
 *
 * A push says little on purpose (its way runs through Google, Apple or Mozilla): a generic title
 * and the notification's id. With the user's credentials, which the page's SDK hands over
 * (DiagnoxixNotify.enablePush or pushCredentials: a postMessage, kept in IndexedDB), the worker
 * fetches the notification's own words from the API; without them, or when the fetch fails (an
 * expired token, no network), it shows the generic text. A click opens the notification's portal
 * link (`data.url`), else the portal's page the SDK named, else this worker's scope.
 *
 * A digest push (`ids`) shows one notification under its counted title; a retraction push
 * (`retracted`) closes the notification shown for that id and shows nothing.
 *
 * Register it from a page of the origin that serves it (a copy on the portal's own origin works
 * the same; set `apiBase` then).
 */
/* eslint-env serviceworker */
"use strict";

var DB_NAME = "diagnoxix-notify-push";
var DB_STORE = "config";
var GENERIC_TITLE = "New message from your clinic";

function openDb() {
  return new Promise(function (resolve, reject) {
    var req = indexedDB.open(DB_NAME, 1);
    req.onupgradeneeded = function () { req.result.createObjectStore(DB_STORE); };
    req.onsuccess = function () { resolve(req.result); };
    req.onerror = function () { reject(req.error); };
  });
}

function withStore(mode, action) {
  return openDb().then(function (db) {
    return new Promise(function (resolve, reject) {
      var tx = db.transaction(DB_STORE, mode);
      var req = action(tx.objectStore(DB_STORE));
      tx.oncomplete = function () { db.close(); resolve(req && req.result); };
      tx.onerror = function () { db.close(); reject(tx.error); };
    });
  });
}

function readConfig() {
  return withStore("readonly", function (store) { return store.get("config"); }).then(
    function (config) { return config || {}; },
    function () { return {}; }
  );
}

/** Where a click goes: the notification's own link (`data.url`, http or https), else the portal. */
function clickUrl(note, config) {
  var base = config.portalUrl || self.registration.scope;
  var link = note && note.data && typeof note.data.url === "string" ? note.data.url : null;
  if (link) {
    try {
      var url = new URL(link, base);
      if (url.protocol === "https:" || url.protocol === "http:") return url.href;
    } catch (e) {
      /* not a URL: the portal instead */
    }
  }
  return base;
}

function fetchNotification(id, config) {
  if (!id || !config.token || !config.userId) return Promise.resolve(null);
  var base = config.apiBase || self.location.origin;
  var url = base + "/v1/users/" + encodeURIComponent(config.userId) + "/notifications/" + encodeURIComponent(id);
  return fetch(url, { headers: { Authorization: "Bearer " + config.token }, credentials: "omit" }).then(
    function (resp) { return resp.ok ? resp.json().then(function (body) { return body.notification; }) : null; },
    function () { return null; }
  );
}

self.addEventListener("message", function (event) {
  var msg = event.data || {};
  if (msg.type === "diagnoxix-push-credentials") {
    var config = { token: msg.token, userId: msg.userId, apiBase: msg.apiBase || null, portalUrl: msg.portalUrl || null };
    event.waitUntil(withStore("readwrite", function (store) { return store.put(config, "config"); }));
  } else if (msg.type === "diagnoxix-push-forget") {
    event.waitUntil(withStore("readwrite", function (store) { return store.delete("config"); }));
  }
});

/** A retraction (`{"retracted": id}`): close what this browser shows of it, show nothing new. */
function closeRetracted(id) {
  return self.registration.getNotifications({ tag: id }).then(function (shown) {
    shown.forEach(function (n) { n.close(); });
  });
}

/** A digest (`{"ids": [...], "count", "title"}`): one notification under its counted title; a
 * click opens the newest one's link (fetched with the credentials), else the portal. */
function showDigest(payload, config) {
  var ids = payload.ids.filter(function (i) { return typeof i === "string"; });
  var newest = ids.length ? ids[ids.length - 1] : null;
  return fetchNotification(newest, config).then(function (note) {
    return self.registration.showNotification(payload.title || GENERIC_TITLE, {
      body: "",
      tag: "diagnoxix-digest-" + (ids[0] || ""),
      data: { id: newest, ids: ids, url: clickUrl(note, config) },
    });
  });
}

self.addEventListener("push", function (event) {
  var payload = {};
  try {
    payload = event.data ? event.data.json() : {};
  } catch (e) {
    payload = {};
  }
  if (typeof payload.retracted === "string") {
    event.waitUntil(closeRetracted(payload.retracted));
    return;
  }
  if (Array.isArray(payload.ids)) {
    event.waitUntil(readConfig().then(function (config) { return showDigest(payload, config); }));
    return;
  }
  var id = typeof payload.id === "string" ? payload.id : null;
  event.waitUntil(
    readConfig().then(function (config) {
      return fetchNotification(id, config).then(function (note) {
        var title = (note && note.title) || payload.title || GENERIC_TITLE;
        return self.registration.showNotification(title, {
          body: note ? note.message : "",
          tag: id || "diagnoxix",
          data: { id: id, url: clickUrl(note, config) },
        });
      });
    })
  );
});

self.addEventListener("notificationclick", function (event) {
  event.notification.close();
  var url = (event.notification.data && event.notification.data.url) || self.registration.scope;
  event.waitUntil(self.clients.openWindow(url));
});
