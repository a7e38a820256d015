// Shared by the board and the desk: fetch a JSON endpoint every few seconds and hand it to a
// renderer. The X-Console-Poll header marks it as the page's own refresh, not activity, so an
// open page does not keep a session alive past the idle timeout. No innerHTML: text only.
"use strict";
window.consolePoll = function (root, render, problemId) {
  var source = root.dataset.source;
  var every = Math.max(2, parseInt(root.dataset.refresh, 10) || 5) * 1000;
  var problem = document.getElementById(problemId);
  function tick() {
    fetch(source, { credentials: "same-origin", headers: { "X-Console-Poll": "1", "Accept": "application/json" } })
      .then(function (response) {
        if (response.status === 401) { window.location.assign(root.dataset.signIn); return null; }
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (data) {
        if (data === null) { return; }
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
window.consoleRow = function (cells) {
  var row = document.createElement("tr");
  cells.forEach(function (text) { var cell = document.createElement("td"); cell.textContent = text; row.appendChild(cell); });
  return row;
};
