// The live board refreshes itself from board.json.
"use strict";
(function () {
  var root = document.getElementById("board");
  if (!root || !document.getElementById("queue-rows")) { return; }
  function set(id, text) { var node = document.getElementById(id); if (node) { node.textContent = text; } }
  function render(data) {
    var queue = document.getElementById("queue-rows");
    var rows = data.waiting.map(function (w) {
      return window.consoleRow([String(w.place), w.kind + (w.tag ? " " + w.tag : ""), w.language, w.need,
        window.consoleDuration(w.waiting_seconds), w.being_offered ? "yes" : ""]);
    });
    if (rows.length === 0) {
      var empty = window.consoleRow(["Nobody is waiting."]);
      empty.firstChild.colSpan = 6;
      rows = [empty];
    }
    queue.replaceChildren.apply(queue, rows);
    var people = document.getElementById("responder-rows");
    people.replaceChildren.apply(people, data.responders.map(function (r) {
      var row = window.consoleRow([r.name + (r.kind === "co_responder" ? " (unit)" : ""), r.languages.join(", "),
        r.on_shift ? "yes" : "no", "", String(r.texts) + (r.text_offered ? " + offer" : "")]);
      var status = document.createElement("span");
      status.className = "status " + r.status.replace(/ /g, "-");
      var paused = r.paused_reason ? (r.status === "paused" ? "" : " · paused") + " (" + r.paused_reason + ")" : "";
      status.textContent = r.status + paused;
      row.children[3].appendChild(status);
      row.dataset.responder = r.id;
      return row;
    }));
    set("waiting-count", String(data.counts.waiting));
    set("shown-count", String(data.counts.shown));
    var cut = document.getElementById("queue-cut");
    if (cut) { cut.hidden = data.counts.waiting <= data.counts.shown; }
    set("voice-count", String(data.counts.voice));
    set("text-count", String(data.counts.text));
    set("available-count", String(data.counts.available));
    set("on-shift-count", String(data.counts.on_shift));
    set("longest-wait", window.consoleDuration(data.longest_wait_seconds));
    var at = new Date(data.at);
    var stamp = document.getElementById("updated-at");
    if (stamp) { stamp.dateTime = data.at; stamp.textContent = at.toISOString().slice(11, 19) + " UTC"; }
  }
  window.consolePoll(root, render, "board-problem");
})();
