// The counselor's page refreshes what they are offered or on now from me.json, and reloads
// when a conversation opens, closes or gets a message, the live call changes, or they are
// paused or un-paused elsewhere (me.json's "inbox"). Not while a reply is being written: its
// box has the focus, or was typed in moments ago (drafts.js puts unsent words back after a
// reload, so words merely left in a box hold nothing off). What changed is said once, in one
// short sentence, in #desk-said (for screen readers). No innerHTML: text only.
"use strict";
(function () {
  var root = document.getElementById("desk");
  if (!root) { return; }
  var token = document.querySelector("meta[name='csrf-token']");
  var TYPING_MS = 10000;
  var SAID_KEY = "console-desk-said";
  var STATUS_WORDS = {
    "available": "You are available.", "ringing": "A call is ringing on your phone.",
    "on a call": "You are on a call.", "paused": "You are paused.", "off shift": "You are off shift."
  };
  var status = document.getElementById("my-status");
  var said = document.getElementById("desk-said");
  var shown = { status: status.textContent, offered: offeredOnPage() };
  var typedAt = 0;
  function formKey() {
    var bytes = new Uint8Array(18);
    window.crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }
  function hidden(name, value) {
    var input = document.createElement("input");
    input.type = "hidden"; input.name = name; input.value = value;
    return input;
  }
  function takeForm(tag) {
    var form = document.createElement("form");
    form.method = "post";
    form.action = root.dataset.take.replace("/0/", "/" + tag.slice(1) + "/");
    form.dataset.key = "take" + tag;  // as desk.html's: consoleFillList leaves it (and its focus) be
    form.append(hidden("csrf_token", token ? token.content : ""), hidden("key", formKey()));
    var button = document.createElement("button");
    button.type = "submit"; button.className = "go";
    button.textContent = "Take " + tag;
    button.setAttribute("aria-label", "Take text " + tag);
    form.appendChild(button);
    return form;
  }
  function offeredOnPage() {
    return Array.prototype.map.call(document.querySelectorAll("#my-contacts form[data-key^='take#']"),
      function (form) { return form.dataset.key.slice(4); });
  }
  function replyBox(element) { return element instanceof Element && element.matches("#inbox textarea"); }
  document.addEventListener("input", function (event) { if (replyBox(event.target)) { typedAt = Date.now(); } });
  // Words left in a reply box come back after a reload (drafts.js, this tab's sessionStorage):
  // only a box in use holds the reload off. Without that storage, any box with words in it does.
  var draftsKept = (function () {
    try { return Boolean(window.sessionStorage); } catch (error) { return false; }
  })();
  function wordsInABox() {
    return Array.prototype.some.call(document.querySelectorAll("#inbox textarea"), function (box) {
      return box.value.trim() !== "";
    });
  }
  function writing() {
    return replyBox(document.activeElement) || Date.now() - typedAt < TYPING_MS || (!draftsKept && wordsInABox());
  }
  // A sentence said as the page reloads is said again after it (this tab's sessionStorage).
  function keepSaid(words) {
    try { window.sessionStorage.setItem(SAID_KEY, words); } catch (error) { /* storage turned off */ }
  }
  function takeSaid() {
    try {
      var words = window.sessionStorage.getItem(SAID_KEY) || "";
      window.sessionStorage.removeItem(SAID_KEY);
      return words;
    } catch (error) { return ""; }
  }
  function say(data) {
    var offered = data.contacts.filter(function (c) { return c.channel === "text" && c.state === "offered" && c.tag; })
      .map(function (c) { return c.tag; });
    var words = [];
    if (data.status !== shown.status) { words.push(STATUS_WORDS[data.status] || "Your status: " + data.status + "."); }
    offered.forEach(function (tag) { if (shown.offered.indexOf(tag) === -1) { words.push("Text " + tag + " offered to you."); } });
    shown = { status: data.status, offered: offered };
    if (words.length) { said.textContent = words.join(" "); }
    return words.join(" ");
  }
  var carried = takeSaid();
  if (carried) { window.setTimeout(function () { said.textContent = carried; }, 500); }
  function render(data) {
    if (data.error) { return; }
    var words = say(data);
    status.textContent = data.status;
    status.className = "status " + data.status.replace(/ /g, "-");
    document.getElementById("my-shift").textContent = data.on_shift ? "on shift" : "off shift";
    var list = document.getElementById("my-contacts");
    var items = data.contacts.map(function (c) {
      var item = document.createElement("li");
      item.dataset.key = c.channel + (c.tag || "");
      var title = document.createElement("strong");
      title.textContent = c.channel + (c.tag ? " " + c.tag : "") + ": " + c.state;
      var line = document.createElement("span");
      line.textContent = c.language + " · " + c.need + " · " + window.consoleDuration(c.seconds);
      var earlier = document.createElement("span");
      earlier.className = "earlier";
      earlier.textContent = c.earlier_count ? "Earlier contacts by this person: " + c.earlier_count + " (" +
        c.earlier.map(function (e) { return e.channel + " " + e.date + " " + e.need; }).join(", ") + ")"
        : "No earlier contacts by this person.";
      item.append(title, line, earlier);
      if (c.channel === "text" && c.state === "offered" && c.tag) { item.appendChild(takeForm(c.tag)); }
      return item;
    });
    window.consoleFillList(list, items, "Nothing right now.");
    if (typeof data.inbox === "string" && data.inbox !== root.dataset.inbox && !writing()) {
      if (words) { keepSaid(words); }
      // ?poll=1: the reload is the page's own, not activity (console/access.py), so a desk left
      // open still signs out after the idle timeout.
      var again = new URL(window.location.href);
      again.searchParams.set("poll", "1");
      window.location.replace(again.toString());
    }
  }
  window.consolePoll(root, render, "desk-problem");
})();
