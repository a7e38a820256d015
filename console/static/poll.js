// Shared by the board and the desk: fetch a JSON endpoint every few seconds and hand it to a
// renderer. The X-Console-Poll header marks it as the page's own refresh, not activity, so an
// open page does not keep a session alive past the idle timeout. No innerHTML: text only.
"use strict";
window.consolePoll = function (root, render, problemId) {
  var source = root.dataset.source;
  var every = Math.max(2, parseInt(root.dataset.refresh, 10) || 5) * 1000;
  var problem = document.getElementById(problemId);
  // Signed out (the idle timeout): to the sign-in page, and back to this page after it (a
  // reply being typed is kept by drafts.js and put back there).
  function signInAndBack() {
    var here = new URL(window.location.href);
    here.searchParams.delete("poll");
    var target = new URL(root.dataset.signIn, window.location.href);
    target.searchParams.set("next", here.pathname + here.search);
    return target.toString();
  }
  // The line-down banner (base.html) follows the endpoint's "line_down" when it has one.
  function showLineDown(data) {
    var banner = document.getElementById("line-down");
    if (!banner || !("line_down" in data)) { return; }
    banner.textContent = data.line_down || "";
    banner.hidden = !data.line_down;
  }
  function tick() {
    fetch(source, { credentials: "same-origin", headers: { "X-Console-Poll": "1", "Accept": "application/json" } })
      .then(function (response) {
        if (response.status === 401) { window.location.assign(signInAndBack()); return null; }
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (data) {
        if (data === null) { return; }
        showLineDown(data);
        render(data);
        if (problem) { problem.textContent = ""; }
      })
      .catch(function () { if (problem) { problem.textContent = "Could not refresh; retrying."; } })
      .finally(function () { window.setTimeout(tick, every); });
  }
  window.setTimeout(tick, every);
};
window.consoleDuration = function (seconds) {
  var minutes = Math.floor(seconds / 60), rest = seconds % 60;
  return minutes + ":" + (rest < 10 ? "0" : "") + rest;
};
// A list's items drawn anew, or one "empty" line saying so. When it shows the same items
// already (in the same places, with the same data-key or none), each is changed only where it
// differs, child by child, and a child whose data-key is unchanged (a Take form) stays: a
// focused button keeps the keyboard focus, a screen reader its place; unchanged, nothing moves.
// Drawn anew, the focus goes back to the element with the same aria-label, if there is one.
(function () {
  var slice = Array.prototype.slice;
  function ownText(element) {
    return slice.call(element.childNodes).filter(function (node) { return node.nodeType === 3; })
      .map(function (node) { return node.data.trim(); }).filter(Boolean).join(" ");
  }
  function sameItem(shown, item) {
    return shown.tagName === item.tagName && shown.className === item.className &&
      shown.getAttribute("data-key") === item.getAttribute("data-key") &&
      shown.children.length === item.children.length && ownText(shown) === ownText(item);
  }
  function patch(shown, item) {
    slice.call(item.children).forEach(function (child, index) {
      var old = shown.children[index];
      var kept = old.hasAttribute("data-key") && old.getAttribute("data-key") === child.getAttribute("data-key");
      if (!kept && !old.isEqualNode(child)) { shown.replaceChild(child, old); }
    });
  }
  window.consoleFillList = function (list, items, emptyText) {
    if (items.length === 0) {
      var empty = document.createElement("li");
      empty.className = "empty";
      empty.textContent = emptyText;
      items = [empty];
    }
    var shown = slice.call(list.children);
    if (shown.length === items.length && items.every(function (item, index) { return sameItem(shown[index], item); })) {
      items.forEach(function (item, index) { patch(shown[index], item); });
      return;
    }
    var focused = document.activeElement;
    var label = focused && focused !== list && list.contains(focused) ? focused.getAttribute("aria-label") : null;
    list.replaceChildren.apply(list, items);
    var again = label && slice.call(list.querySelectorAll("[aria-label]"))
      .filter(function (element) { return element.getAttribute("aria-label") === label; })[0];
    if (again) { again.focus(); }
  };
})();
window.consoleRow = function (cells) {
  var row = document.createElement("tr");
  cells.forEach(function (text) { var cell = document.createElement("td"); cell.textContent = text; row.appendChild(cell); });
  return row;
};
