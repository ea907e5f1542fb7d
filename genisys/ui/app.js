"use strict";
// The status page: reads the JSON API with GET only, every REFRESH_MS, and shows it.
// Names and errors come from Consul and connectors: everything is shown with
// textContent, never parsed as HTML.

const REFRESH_MS = 2000;
const TIMEOUT_MS = 5000;
const TOKEN_KEY = "genisys-token";
// The API is at the root the page is under: /ui/ -> /health (also behind a path prefix).
const API_ROOT = new URL("../", document.baseURI);

let lastSuccess = null;   // when every call last answered
let unreachableSince = null;

function $(id) { return document.getElementById(id); }

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function row(cells) {
  const tr = el("tr");
  for (const cell of cells) tr.append(cell instanceof Node ? cell : el("td", cell));
  return tr;
}

function pairs(counts) {
  const entries = Object.entries(counts || {});
  return entries.length ? entries.map(([name, n]) => `${name}=${n}`).join(", ") : "–";
}

const two = (n) => String(n).padStart(2, "0");

function clock(at) {
  return `${two(at.getHours())}:${two(at.getMinutes())}:${two(at.getSeconds())}`;
}

// An ISO time from the API as local "YYYY-MM-DD HH:MM:SS".
function time(iso) {
  if (!iso) return "–";
  const at = new Date(iso);
  if (isNaN(at)) return String(iso);
  return `${at.getFullYear()}-${two(at.getMonth() + 1)}-${two(at.getDate())} ${clock(at)}`;
}

// Show the rows, or hide the table and say why it is empty.
function fill(tableId, noteId, rows, emptyNote) {
  const table = $(tableId);
  table.tBodies[0].replaceChildren(...rows);
  table.hidden = rows.length === 0;
  showNote(noteId, rows.length ? "" : emptyNote);
}

// One GET: {status, body}; throws only when the API cannot be reached.
async function get(path) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(new URL(path, API_ROOT), {
    headers, cache: "no-store", signal: AbortSignal.timeout(TIMEOUT_MS),
  });
  let body = null;
  try { body = await response.json(); } catch { /* not JSON: the status says enough */ }
  return { status: response.status, body };
}

function errorOf(answer) {
  return (answer.body && typeof answer.body.error === "string")
    ? answer.body.error : `the API answered ${answer.status}.`;
}

function showNote(id, text) {
  const note = $(id);
  note.hidden = !text;
  note.textContent = text || "";
}

function showLeader(leader, health) {
  const lead = leader.status === 200 ? leader.body : {};
  $("leader-id").textContent = leader.status === 200 ? lead.id : errorOf(leader);
  $("leader-address").textContent = lead.address || "–";
  $("leader-since").textContent = time(lead.since);
  $("leader-term").textContent = lead.term ?? "–";
  const h = health.body || {};
  const role = h.leader ? "leader" : "follower";
  $("replica").textContent = h.status === "ok"
    ? `${h.replica} (${role}), healthy`
    : `${h.replica ?? "?"} (${role}), unavailable: ${h.error ?? errorOf(health)}`;
}

// A compute is failing when a service's record shows an error for it.
function computeHealth(name, services) {
  const failing = Object.entries(services).filter(([, r]) => r.errors && name in r.errors);
  if (failing.length) {
    const [service, record] = failing[0];
    const more = failing.length > 1 ? ` (and ${failing.length - 1} more)` : "";
    return ["failing", `${service}: ${record.errors[name]}${more}`];
  }
  const runs = Object.values(services).some((r) => r.observed && name in r.observed);
  return runs ? ["ok", ""] : ["idle", "no service observed here"];
}

function showComputes(computes, services) {
  if (computes.status !== 200) {
    fill("computes", "computes-note", [], errorOf(computes));
    return;
  }
  const records = services.status === 200 ? services.body : {};
  fill("computes", "computes-note", Object.entries(computes.body).map(([name, compute]) => {
    let [health, details] = computeHealth(name, records);
    if (compute.deleting) [health, details] = ["deleting", `since ${time(compute.deleting)}`];
    return row([el("td", name, "name"), compute.connector,
                el("td", health, `badge ${health}`), details]);
  }), "No compute is defined.");
}

function serviceState(record) {
  if (record.state && record.state !== "active") return record.state;
  if (record.paused) return "paused";
  if (Object.keys(record.errors || {}).length) return "failing";
  const placed = record.placement || {};
  const observed = record.observed || {};
  const names = new Set([...Object.keys(placed), ...Object.keys(observed)]);
  const converged = [...names].every((c) => (placed[c] ?? 0) === (observed[c] ?? 0));
  return converged ? "converged" : "converging";
}

function problems(record) {
  const list = el("ul", null, "problems");
  for (const [compute, error] of Object.entries(record.errors || {})) {
    list.append(el("li", `${compute}: ${error}`, "error"));
  }
  for (const [compute, warning] of Object.entries(record.warnings || {})) {
    list.append(el("li", `${compute}: ${warning}`, "warning"));
  }
  const cell = el("td");
  cell.append(list.childElementCount ? list : "–");
  return cell;
}

function showServices(services) {
  if (services.status !== 200) {
    fill("services", "services-note", [], errorOf(services));
    return;
  }
  fill("services", "services-note", Object.entries(services.body).map(([name, record]) => {
    const state = serviceState(record);
    const tr = row([el("td", name, "name"), el("td", state, `badge ${state}`),
                    el("td", record.desired ?? "–", "num desired"),
                    el("td", pairs(record.placement), "placement"),
                    el("td", pairs(record.observed), "observed"),
                    problems(record), el("td", time(record.observed_at), "time")]);
    tr.dataset.service = name;
    return tr;
  }), "No service is known yet.");
}

function showOrders(orders) {
  if (orders.status !== 200) {
    fill("orders", "orders-note", [], orders.status === 404
      ? "No order history on this server." : errorOf(orders));
    return;
  }
  const events = Array.isArray(orders.body.events) ? orders.body.events : [];
  fill("orders", "orders-note", events.map((e) => row([
    el("td", time(e.time), "time"), el("td", e.service, "name"), el("td", e.compute, "nowrap"),
    el("td", `${e.from} → ${e.to}`, "num"), el("td", e.term ?? "–", "num"),
    el("td", e.result, `badge ${e.result}`), e.reason ?? "",
  ])), "No order was sent recently.");
}

function showProblem(text) {
  showNote("problem", text);
}

// A 401 anywhere: ask for a token and show no data until one is accepted.
function askForToken(answer) {
  const hadToken = sessionStorage.getItem(TOKEN_KEY) !== null;
  $("token-form").hidden = false;
  $("data").hidden = true;
  showProblem(hadToken ? `The token was refused: ${errorOf(answer)}` : "");
}

async function refresh() {
  let answers;
  try {
    answers = await Promise.all(
      ["health", "leader", "compute", "service", "events?limit=20"].map(get));
  } catch (error) {
    unreachableSince ??= new Date();
    $("data").classList.add("stale");
    showProblem(`The API cannot be reached since ${clock(unreachableSince)} (${error.message});` +
                ` the data below is from ${lastSuccess ? clock(lastSuccess) : "no refresh"}.`);
    return;
  }
  unreachableSince = null;
  $("data").classList.remove("stale");
  const [health, leader, computes, services, orders] = answers;
  const refused = answers.find((a) => a.status === 401);
  $("forget-token").hidden = sessionStorage.getItem(TOKEN_KEY) === null;
  if (refused) {
    askForToken(refused);
    return;
  }
  $("token-form").hidden = true;
  $("data").hidden = false;
  showProblem("");
  try {
    showLeader(leader, health);
    showComputes(computes, services);
    showServices(services);
    showOrders(orders);
  } catch (error) {  // an answer of an unexpected shape: say so, try again next time
    showProblem(`An answer of the API could not be shown: ${error.message}`);
    return;
  }
  lastSuccess = new Date();
  $("refreshed").textContent = `refreshed at ${clock(lastSuccess)}`;
}

async function loop() {
  try {
    await refresh();
  } finally {
    setTimeout(loop, REFRESH_MS);  // after the last one ended: refreshes never pile up
  }
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  $("token").value = "";
  if (!/^[\x21-\x7e]+$/.test(token)) {  // an HTTP header carries nothing else
    showProblem("A token is one word of printable ASCII characters.");
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  refresh();
});

$("forget-token").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  refresh();
});

loop();
