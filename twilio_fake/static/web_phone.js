// The sandbox phones' page: shows each phone's state (polled every second) and sends what the
// person does. TwiML is followed by the stand-in (twilio_fake/web_phone.py), never here.
"use strict";

const api = (path) => `${location.pathname.replace(/\/$/, "")}/api${path}`;
const phones = new Map(); // id -> {el, shown, texts, spoken}
const STORE = "sandbox-phones";

async function send(method, path, body) {
  const reply = await fetch(api(path), {
    method,
    headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  return reply.status === 204 ? {} : reply.json();
}

function remember() {
  sessionStorage.setItem(STORE, JSON.stringify([...phones.keys()]));
}

function describe(phone) {
  switch (phone.state) {
    case "ringing": return "Ringing… the line is calling";
    case "calling": return "On the line";
    case "listening": return "The line is listening (keys or words)";
    case "holding": return "holding…";
    case "connected":
      return phone.with.length ? `connected with ${phone.with.join(" and ")}` : "connected (alone in the room)";
    case "gone": return "This phone was put away";
    default: return "idle";
  }
}

function listeningText(listening) {
  if (!listening) return "";
  const what = listening.input.includes("speech") && listening.input.includes("dtmf") ? "keys or words"
    : listening.input.includes("speech") ? "words" : "keys";
  const digits = listening.digits ? ` · pressed so far: ${listening.digits}` : "";
  return `Listening for ${what}: ${listening.seconds_left.toFixed(0)} s left${digits}`;
}

// A short two-tone ring, made here (no audio file to fetch).
let audio = null;
function ringTone() {
  audio = audio || new AudioContext();
  for (const [offset, hz] of [[0, 440], [0.25, 480]]) {
    const tone = audio.createOscillator();
    const gain = audio.createGain();
    tone.frequency.value = hz;
    gain.gain.value = 0.08;
    tone.connect(gain).connect(audio.destination);
    tone.start(audio.currentTime + offset);
    tone.stop(audio.currentTime + offset + 0.2);
  }
}

function speak(text, language) {
  if (!("speechSynthesis" in window)) return;
  const utterance = new SpeechSynthesisUtterance(text);
  utterance.lang = language || "en-US";
  window.speechSynthesis.speak(utterance);
}

function render(phone) {
  const entry = phones.get(phone.id);
  if (!entry) return;
  const el = entry.el;
  el.className = `phone ${phone.state}`;
  el.dataset.state = phone.state;
  el.querySelector(".status").textContent = describe(phone);
  const listening = el.querySelector(".listen-info");
  listening.hidden = !phone.listening;
  listening.textContent = listeningText(phone.listening);
  const inCall = !["idle", "ringing", "gone"].includes(phone.state);
  el.querySelector(".call").hidden = phone.state !== "idle";
  el.querySelector(".answer").hidden = phone.state !== "ringing";
  el.querySelector(".decline").hidden = phone.state !== "ringing";
  el.querySelector(".hangup").hidden = !inCall;
  el.querySelector(".patient").checked = phone.patient;
  // The whisper's choice as two big buttons (the keypad works as well).
  const prompts = (phone.transcript || []).filter((item) => item.kind === "say");
  const lastPrompt = prompts.length ? prompts[prompts.length - 1].text : "";
  el.querySelector(".offer").hidden = !(phone.listening && /Press 1 to (accept|join|call)/.test(lastPrompt));
  if (phone.state === "ringing" && el.querySelector(".ring-sound").checked) ringTone();

  const transcript = el.querySelector(".transcript");
  for (const item of (phone.transcript || []).slice(entry.shown)) {
    const li = document.createElement("li");
    li.className = item.kind;
    if (item.kind === "say") {
      li.dataset.language = `[${item.language}]`;
      li.textContent = item.text;
      if (el.querySelector(".read-aloud").checked) speak(item.text, item.language);
    } else if (item.kind === "talk") {
      li.textContent = `${item.who}: ${item.text}`;
    } else {
      li.textContent = item.text;
    }
    transcript.append(li);
    transcript.scrollTop = transcript.scrollHeight;
  }
  entry.shown = (phone.transcript || []).length;

  const texts = el.querySelector(".texts");
  for (const text of (phone.texts || []).slice(entry.texts)) {
    const li = document.createElement("li");
    li.className = text.mine ? "mine" : "theirs";
    li.textContent = text.body;
    texts.append(li);
    texts.scrollTop = texts.scrollHeight;
    if (!text.mine) addTags(el, text.body);
  }
  entry.texts = (phone.texts || []).length;
}

// Reply helpers for a counselor's texts: "YES 12" to take an offer, "#12 " to answer in it.
function addTags(el, body) {
  const tags = el.querySelector(".tags");
  const found = [];
  for (const match of body.matchAll(/YES (\d+)/g)) found.push(`YES ${match[1]}`);
  for (const match of body.matchAll(/#(\d+)/g)) found.push(`#${match[1]} `, `END ${match[1]}`);
  for (const tag of found) {
    if ([...tags.children].some((button) => button.dataset.tag === tag)) continue;
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.tag = tag;
    button.textContent = tag.trim();
    button.addEventListener("click", () => {
      const input = el.querySelector(".text .body");
      input.value = tag.startsWith("#") ? tag + input.value.replace(/^#\d+ /, "") : tag;
      input.focus();
    });
    tags.append(button);
  }
}

function addPane(phone) {
  const el = document.getElementById("phone-template").content.firstElementChild.cloneNode(true);
  el.dataset.phoneId = phone.id;
  el.dataset.role = phone.role;
  el.setAttribute("aria-label", `${phone.name} phone`);
  el.querySelector(".name").textContent = phone.name;
  el.querySelector(".number").textContent = phone.number;
  if (phone.role === "texter") el.querySelector(".call").textContent = "Call the line";
  const act = (action, body) => send("POST", `/phones/${phone.id}/${action}`, body).then((r) => r.phone && render(r.phone));
  el.querySelector(".call").addEventListener("click", () => act("call"));
  el.querySelector(".answer").addEventListener("click", () => act("answer"));
  el.querySelector(".decline").addEventListener("click", () => act("decline"));
  el.querySelector(".hangup").addEventListener("click", () => act("hangup"));
  el.querySelectorAll(".keypad button, .offer button").forEach((button) =>
    button.addEventListener("click", () => act("keys", { keys: button.dataset.key })));
  el.querySelector(".speak").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = el.querySelector(".words");
    act("words", { words: input.value });
    input.value = "";
  });
  el.querySelector(".text").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = el.querySelector(".body");
    act("text", { body: input.value });
    input.value = "";
  });
  // Browsers start audio only from a click: make the ring's audio context on ticking the box.
  el.querySelector(".ring-sound").addEventListener("change", () => {
    audio = audio || new AudioContext();
    audio.resume();
  });
  el.querySelector(".patient").addEventListener("change", (event) => act("settings", { patient: event.target.checked }));
  el.querySelector(".close").addEventListener("click", () => {
    send("DELETE", `/phones/${phone.id}`);
    phones.delete(phone.id);
    el.remove();
    remember();
  });
  document.getElementById("phones").append(el);
  phones.set(phone.id, { el, shown: 0, texts: 0 });
  remember();
  render(phone);
}

async function newPhone(role, number) {
  const phone = await send("POST", "/phones", { role, number });
  if (phone.id) addPane(phone);
  else document.getElementById("directory-problem").textContent = phone.message || "could not add that phone";
}

function renderBoard(board) {
  const rooms = document.getElementById("rooms");
  rooms.replaceChildren();
  for (const room of board.rooms) {
    const li = document.createElement("li");
    li.textContent = `${room.people.join(" ⇄ ")} (${room.status === "in-progress" ? "talking" : "waiting in the room"})`;
    rooms.append(li);
  }
  if (!board.rooms.length) {
    const li = document.createElement("li");
    li.className = "quiet";
    li.textContent = "Nobody is connected.";
    rooms.append(li);
  }
  document.getElementById("ringing").textContent = board.ringing.length ? `Ringing: ${board.ringing.join(", ")}` : "";
  document.getElementById("with-line").textContent =
    board.with_the_line.length ? `In the menus or holding: ${board.with_the_line.join(", ")}` : "";
}

async function poll() {
  try {
    const ids = [...phones.keys()];
    const query = ids.map((id) => `phone=${encodeURIComponent(id)}`).join("&");
    const state = await send("GET", `/state?${query}`);
    state.phones.forEach(render);
    renderBoard(state.board);
  } catch (error) {
    document.getElementById("directory-problem").textContent = "the stand-in does not answer";
  } finally {
    setTimeout(poll, 1000);
  }
}

async function loadDirectory() {
  const directory = await send("GET", "/directory");
  const pick = document.getElementById("staff-pick");
  for (const member of directory.staff) {
    const option = document.createElement("option");
    option.value = member.number;
    const languages = member.languages.length ? `, ${member.languages.join("/")}` : "";
    option.textContent = `${member.name} (${member.kind}${languages}) ${member.number}`;
    pick.append(option);
  }
  document.getElementById("directory-problem").textContent = directory.problem || "";
}

async function start() {
  document.querySelectorAll("[data-add]").forEach((button) =>
    button.addEventListener("click", () => newPhone(button.dataset.add)));
  document.getElementById("add-phone").addEventListener("submit", (event) => {
    event.preventDefault();
    const number = document.getElementById("staff-number").value.trim() || document.getElementById("staff-pick").value;
    if (!number) {
      document.getElementById("directory-problem").textContent = "Choose a counselor or unit, or type a number.";
      return;
    }
    newPhone("staff", number);
  });
  await loadDirectory();
  // Phones of this tab survive a reload; ?add=caller&add=staff:+13125550104 opens new ones.
  const kept = JSON.parse(sessionStorage.getItem(STORE) || "[]");
  for (const id of kept) {
    const phone = await send("GET", `/phones/${id}`).catch(() => null);
    if (phone && phone.id && phone.state) addPane(phone);
  }
  const wanted = new URLSearchParams(location.search).getAll("add");
  if (!kept.length) {
    for (const spec of wanted.length ? wanted : ["caller"]) {
      const [role, number] = spec.split(":");
      // An unescaped "+" in a query string arrives as a space.
      await newPhone(role, number && number.trim().replace(/^(\d)/, "+$1"));
    }
  }
  remember();
  poll();
}

start();
