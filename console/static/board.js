// The live board refreshes itself from board.json.
"use strict";
(function () {
  var root = document.getElementById("board");
  if (!root || !document.getElementById("queue-rows")) { return; }
  function set(id, text) { var node = document.getElementById(id); if (node) { node.textContent = text; } }
  // A row's action: a POST form with the page's CSRF token and one button.
  function actionForm(action, label) {
    var token = document.querySelector('meta[name="csrf-token"]');
    var form = document.createElement("form");
    form.method = "post";
    form.action = action;
    var csrf = document.createElement("input");
    csrf.type = "hidden";
    csrf.name = "csrf_token";
    csrf.value = token ? token.content : "";
    var button = document.createElement("button");
    button.type = "submit";
    button.textContent = label;
    form.appendChild(csrf);
    form.appendChild(button);
    return form;
  }
  // Texts the line could not handle: each row carries its own "A person has this" form.
  function renderStuck(stuck) {
    var section = document.getElementById("stuck-texts");
    var body = document.getElementById("stuck-rows");
    if (!section || !body) { return; }
    body.replaceChildren.apply(body, stuck.map(function (s) {
      var row = window.consoleRow([s.case, s.sender, s.tag || "", window.consoleDuration(s.waiting_seconds),
        s.alert, ""]);
      row.children[5].appendChild(
        actionForm(section.dataset.action.replace(/\/0\/taken$/, "/" + s.message_id + "/taken"), "A person has this"));
      row.dataset.message = String(s.message_id);
      return row;
    }));
    section.hidden = stuck.length === 0;
  }
  // Texts to texters that did not reach them in the last hour (no action here: information).
  function renderUndelivered(undelivered) {
    var section = document.getElementById("undelivered-texts");
    var body = document.getElementById("undelivered-rows");
    if (!section || !body) { return; }
    body.replaceChildren.apply(body, undelivered.map(function (u) {
      var row = window.consoleRow([u.tag || "none", u.counselor || "nobody",
        window.consoleDuration(u.seconds_ago) + " ago", u.what]);
      row.dataset.message = String(u.message_id);
      return row;
    }));
    section.hidden = undelivered.length === 0;
  }
  // People who wrote after texting STOP: the line cannot text them back (information; the
  // emergency unmask page has their number).
  function renderAfterStop(people) {
    var section = document.getElementById("after-stop-texts");
    var body = document.getElementById("after-stop-rows");
    if (!section || !body) { return; }
    body.replaceChildren.apply(body, people.map(function (p) {
      var row = window.consoleRow([p.case, p.ago, p.alert]);
      row.dataset.message = String(p.message_id);
      return row;
    }));
    section.hidden = people.length === 0;
  }
  // Check-ins flagged for a person, each with its "Followed up" form.
  function renderFlagged(flagged) {
    var section = document.getElementById("flagged-checkins");
    var body = document.getElementById("flagged-rows");
    if (!section || !body) { return; }
    body.replaceChildren.apply(body, flagged.map(function (f) {
      var row = window.consoleRow([f.case, f.reason, f.ago, f.alert, ""]);
      row.children[4].appendChild(actionForm(
        section.dataset.action.replace(/\/0\/followed-up$/, "/" + f.checkin_id + "/followed-up"), "Followed up"));
      row.dataset.checkin = String(f.checkin_id);
      return row;
    }));
    section.hidden = flagged.length === 0;
  }
  // Follow-ups the line gave up running, each with its "A person has this" form, and callbacks
  // it gave up without reaching the person (no contact id: nothing to mark; listed for a day).
  function renderUnfinished(unfinished) {
    var section = document.getElementById("unfinished-contacts");
    var body = document.getElementById("unfinished-rows");
    if (!section || !body) { return; }
    body.replaceChildren.apply(body, unfinished.map(function (u) {
      var row = window.consoleRow([u.case, u.what, u.language, u.need, u.ago, ""]);
      if (u.contact_id === null) {
        row.dataset.case = u.case;
        return row;
      }
      row.children[5].appendChild(actionForm(
        section.dataset.action.replace(/\/0\/taken$/, "/" + u.contact_id + "/taken"), "A person has this"));
      row.dataset.contact = String(u.contact_id);
      return row;
    }));
    section.hidden = unfinished.length === 0;
  }
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
      var paused = r.paused_reason ? (r.status === "paused" ? "" : " · paused") + " (" + r.paused_reason.replace(/_/g, " ") + ")" : "";
      status.textContent = r.status + paused;
      row.children[3].appendChild(status);
      row.dataset.responder = r.id;
      return row;
    }));
    renderStuck(data.stuck_texts || []);
    renderUndelivered(data.undelivered || []);
    renderAfterStop(data.after_stop || []);
    renderFlagged(data.flagged_checkins || []);
    renderUnfinished(data.unfinished || []);
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
