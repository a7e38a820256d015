// The counselor's page refreshes what they are offered or on now from me.json, and reloads
// its text inbox when a conversation opens, closes or gets a message (unless a reply is
// being written). No innerHTML: text only.
"use strict";
(function () {
  var root = document.getElementById("desk");
  if (!root) { return; }
  var token = document.querySelector("meta[name='csrf-token']");
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
    form.append(hidden("csrf_token", token ? token.content : ""), hidden("key", formKey()));
    var button = document.createElement("button");
    button.type = "submit"; button.className = "go";
    button.textContent = "Take " + tag;
    button.setAttribute("aria-label", "Take text " + tag);
    form.appendChild(button);
    return form;
  }
  function writing() {
    var areas = Array.prototype.slice.call(document.querySelectorAll("#inbox textarea"));
    return areas.some(function (area) { return area.value.trim() !== "" || area === document.activeElement; });
  }
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
      // ?poll=1: the reload is the page's own, not activity (console/access.py), so a desk left
      // open still signs out after the idle timeout.
      var again = new URL(window.location.href);
      again.searchParams.set("poll", "1");
      window.location.replace(again.toString());
    }
  }
  window.consolePoll(root, render, "desk-problem");
})();
