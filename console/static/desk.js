// The counselor's page refreshes what they are offered or on now from me.json.
"use strict";
(function () {
  var root = document.getElementById("desk");
  if (!root) { return; }
  function render(data) {
    if (data.error) { return; }
    var status = document.getElementById("my-status");
    status.textContent = data.status;
    status.className = "status " + data.status.replace(/ /g, "-");
    document.getElementById("my-shift").textContent = data.on_shift ? "on shift" : "off shift";
    var list = document.getElementById("my-contacts");
    var items = data.contacts.map(function (c) {
      var item = document.createElement("li");
      var title = document.createElement("strong");
      title.textContent = c.channel + (c.tag ? " " + c.tag : "") + ": " + c.state;
      var line = document.createElement("span");
      line.textContent = c.language + " · " + c.need + " · " + window.consoleDuration(c.seconds);
      item.append(title, line);
      return item;
    });
    if (items.length === 0) {
      var empty = document.createElement("li");
      empty.className = "empty";
      empty.textContent = "Nothing right now.";
      items = [empty];
    }
    list.replaceChildren.apply(list, items);
  }
  window.consolePoll(root, render, "desk-problem");
})();
