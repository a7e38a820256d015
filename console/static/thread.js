// The full thread's page: its messages are redrawn from its JSON every few seconds (the
// texter's new texts, what became of the counselor's), in place: the reply box, and what is
// being typed in it, is never touched. No innerHTML: text only.
"use strict";
(function () {
  var root = document.getElementById("thread-page");
  if (!root) { return; }
  var list = root.querySelector("ol.messages");
  var gone = document.getElementById("thread-gone");
  var drawn = null;
  function span(className, text) {
    var element = document.createElement("span");
    element.className = className;
    element.textContent = text;
    return element;
  }
  function item(line) {
    var entry = document.createElement("li");
    entry.className = "from-" + line.who;
    var who = span("who", line.label + " ");
    var time = document.createElement("time");
    time.dateTime = line.at;
    time.textContent = line.time;
    who.appendChild(time);
    entry.append(who, " ", span("body", line.body));
    if (line.delivery) {
      var delivery = span("delivery " + line.delivery.kind, line.delivery.text);
      if (line.delivery.kind !== "delivered") { delivery.setAttribute("role", "note"); }
      entry.appendChild(delivery);
    }
    return entry;
  }
  function render(data) {
    // No longer theirs: say why, and leave the page as it is (the words typed can be sent or copied).
    if (gone.textContent !== (data.gone || "")) {  // unchanged: not announced again
      gone.textContent = data.gone || "";
      gone.hidden = !data.gone;
    }
    if (data.gone || !list) { return; }
    var now = JSON.stringify(data.lines);
    if (now === drawn) { return; }  // unchanged: a selection being made is left alone
    drawn = now;
    window.consoleFillList(list, data.lines.map(item), "No messages yet.");
  }
  window.consolePoll(root, render, "thread-problem");
})();
