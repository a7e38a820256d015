// A reply being written to a texter is kept in this tab's sessionStorage (the browser's, for
// this tab only, gone when it closes; never sent to the server before the counselor sends it),
// by account and conversation, so that a sign-in between loses nothing: the idle timeout's
// redirect, the page's own, or a reply sent after the session ended. It is put back in the
// conversation's reply box on the next page that has one. The page after a reply went out says
// so (a "console-reply-sent" meta tag, ids only) and the copy goes; signing out drops them all.
"use strict";
(function () {
  var PREFIX = "console-reply:";
  var store;
  try { store = window.sessionStorage; store.length; } catch (error) { return; }  // storage turned off
  function meta(name) {
    return Array.prototype.map.call(document.querySelectorAll("meta[name='" + name + "']"),
      function (tag) { return tag.content; });
  }
  function read(key) {
    try { return JSON.parse(store.getItem(key) || "null"); } catch (error) { return null; }
  }
  function keep(key, words, sending) {
    try {
      if (words.trim() === "") { store.removeItem(key); return; }
      store.setItem(key, JSON.stringify({ words: words, sending: sending }));
    } catch (error) { /* full, or turned off: the box itself still holds the words */ }
  }
  function ours() {
    var keys = [];
    for (var index = 0; index < store.length; index += 1) {
      var key = store.key(index);
      if (key && key.indexOf(PREFIX) === 0) { keys.push(key); }
    }
    return keys;
  }
  // The first page after a reply was sent: gone if this page says it went out, else (the
  // sign-in page, a refusal) kept as a draft again.
  var sent = meta("console-reply-sent");
  ours().forEach(function (key) {
    var draft = read(key);
    if (!draft || typeof draft.words !== "string") { store.removeItem(key); return; }
    if (!draft.sending) { return; }
    if (sent.indexOf(key.slice(PREFIX.length)) !== -1) { store.removeItem(key); } else { keep(key, draft.words, false); }
  });
  var account = meta("console-account")[0];
  if (account) {
    Array.prototype.forEach.call(document.querySelectorAll("textarea[data-draft]"), function (area) {
      var key = PREFIX + account + ":" + area.dataset.draft;
      var draft = read(key);
      if (area.value.trim() !== "") {
        keep(key, area.value, false);  // words the server gave back (a refused reply): these
      } else if (draft) {
        area.value = draft.words;
      }
      area.addEventListener("input", function () { keep(key, area.value, false); });
      if (area.form) { area.form.addEventListener("submit", function () { keep(key, area.value, true); }); }
    });
  }
  Array.prototype.forEach.call(document.querySelectorAll("form.signout"), function (form) {
    form.addEventListener("submit", function () { ours().forEach(function (key) { store.removeItem(key); }); });
  });
})();
