// The dashboard: an observer logged in over the WebSocket gateway.  Presence
// events and messages arrive live over the socket; the device table and the
// counters are this node's figures from GET /api/devices and /api/stats,
// fetched again on every presence event and every few seconds.
// Everything a device sent is shown as text, never as markup.

import { HyperTCPClient, gatewayUrl } from "./hypertcp.js";

const REFRESH_MS = 2000;
const MAX_EVENTS = 200;
const $ = (id) => document.getElementById(id);

let client = null;
let token = null;
let refreshTimer = null;
let refreshSoon = null;  // a refresh is due
const known = new Set();

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("login-error").textContent = "";
  token = $("token").value.trim();
  if (client) client.close();
  client = new HyperTCPClient(gatewayUrl(), { token, deviceId: $("dashboard-id").value.trim() });
  client.onState(showState);
  client.onMessage(received);
  client.onError((error) => note(`server: ${error.name}: ${error.error ?? error.reason}`, "error"));
  try {
    const answer = await client.connect();
    if (answer.role !== "observer") {
      client.close();
      $("login-error").textContent = `token of role ${answer.role}: the dashboard needs an observer token`;
      return;
    }
    $("token").value = "";
    $("login").hidden = true;
    $("board").hidden = false;
    $("who").textContent = `logged in as ${answer.deviceId}`;
    refresh();
    refreshTimer = setInterval(refresh, REFRESH_MS);
  } catch (error) {
    $("login-error").textContent = error.message;
  }
});

$("send-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const result = $("send-result");
  const target = $("target").value.trim();
  let payload;
  try {
    payload = JSON.parse($("payload").value);
  } catch (error) {
    show(result, `the payload is not JSON: ${error.message}`, "error");
    return;
  }
  if (payload === null || typeof payload !== "object" || Array.isArray(payload)) {
    show(result, "the payload must be a JSON object", "error");
    return;
  }
  try {
    const answer = target === "broadcast"
      ? await client.broadcast(payload)
      : await client.send(target, payload, { ack: $("ack").checked });
    show(result, `${target}: ${answer.name} (${answer.status}) ${answer.reason}`, answer.ok ? "good" : "error");
    if (answer.ok) note(`→ ${target}: ${JSON.stringify(payload)}`, "sent");
  } catch (error) {
    show(result, error.message, "error");
  }
});

function showState(state, detail) {
  const badge = $("state");
  badge.textContent = state;
  badge.className = `state ${state}`;
  if (state === "offline") {
    const why = detail.reason ? `${detail.code}: ${detail.reason}` : `${detail.code}`;
    note(`connection lost (${why}); logging in again in ${(detail.retryIn / 1000).toFixed(1)} s`, "error");
  } else if (state === "online" && refreshTimer) {
    note(`logged in again as ${detail.deviceId}`, "presence");
    refresh();
  }
}

function received(message) {
  const payload = message.payload ?? {};
  if (message.from === "server" && typeof payload.event === "string") {
    const verb = { deviceConnected: "connected", deviceDisconnected: "disconnected", deviceStatus: "online" }[payload.event] ?? payload.event;
    if (payload.event !== "deviceStatus") note(`${payload.deviceId} ${verb} (${payload.clientId})`, "presence");
    soon();
    return;
  }
  soon();
  const kind = message.type === "broadcast" ? "broadcast from" : message.to === "server" ? "telemetry from" : "from";
  note(`${kind} ${message.from}: ${JSON.stringify(payload)}`, "message");
}

// The figures again shortly after something happened, at most a few times a second.
function soon() {
  if (refreshSoon === null) refreshSoon = setTimeout(() => { refreshSoon = null; refresh(); }, 200);
}

async function refresh() {
  if (!client || !client.online) return;
  // Each on its own: the counters need a token granted "stats", the table does not.
  const [devices, stats] = await Promise.allSettled([api("/api/devices"), api("/api/stats")]);
  if (devices.status === "fulfilled") showDevices(devices.value.devices);
  show($("devices-note"), devices.status === "fulfilled" ? "" : devices.reason.message, "error");
  if (stats.status === "fulfilled") showCounters(stats.value);
  show($("counters-note"), stats.status === "fulfilled" ? "" : stats.reason.message, "error");
}

async function api(path) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${token}` }, cache: "no-store" });
  const body = await response.json();
  if (!response.ok) throw new Error(`${path}: ${body.name ?? response.status}: ${body.reason ?? body.error}`);
  return body;
}

function showDevices(devices) {
  const rows = $("device-rows");
  const ids = $("device-ids");
  rows.replaceChildren();
  ids.replaceChildren();
  const seen = new Set();
  for (const device of devices) {
    const row = document.createElement("tr");
    row.dataset.id = device.deviceId;
    if (!known.has(device.deviceId)) row.className = "new";
    seen.add(device.deviceId);
    const since = new Date(device.since).toLocaleTimeString();
    for (const [text, className] of [[device.deviceId], [device.address], [device.role], [device.transport],
      [since], [device.messagesIn, "number"], [device.messagesOut, "number"]]) {
      const cell = document.createElement("td");
      cell.textContent = String(text);
      if (className) cell.className = className;
      row.append(cell);
    }
    const cell = document.createElement("td");
    if (device.deviceId !== client.deviceId) {
      const kick = document.createElement("button");
      kick.className = "kick";
      kick.textContent = "kick";
      kick.addEventListener("click", () => kickDevice(device.deviceId));
      cell.append(kick);
    }
    row.append(cell);
    rows.append(row);
    const option = document.createElement("option");
    option.value = device.deviceId;
    ids.append(option);
  }
  known.clear();
  for (const id of seen) known.add(id);
  $("device-count").textContent = String(seen.size);
}

function showCounters(stats) {
  const list = $("counter-list");
  list.replaceChildren();
  const refused = Object.entries(stats.counters ?? {}).filter(([name]) => name !== "connections")
    .reduce((sum, [, count]) => sum + count, 0);
  for (const [label, value] of [["connections", stats.connections], ["devices", stats.devices],
    ["observers", stats.observers], ["messages in", stats.messagesIn], ["messages out", stats.messagesOut],
    ["delivered", stats.delivered], ["refused / dropped", refused], ["draining", stats.draining ? "yes" : "no"]]) {
    const item = document.createElement("div");
    const term = document.createElement("dt");
    const value_ = document.createElement("dd");
    term.textContent = label;
    value_.textContent = String(value);
    item.append(term, value_);
    list.append(item);
  }
}

async function kickDevice(deviceId) {
  try {
    const answer = await client.command("kick", { deviceId });
    note(`kick ${deviceId}: ${answer.name} ${answer.reason}`, answer.ok ? "presence" : "error");
  } catch (error) {
    note(`kick ${deviceId}: ${error.message}`, "error");
  }
}

function note(text, kind) {
  const events = $("events");
  const item = document.createElement("li");
  item.className = kind;
  const time = document.createElement("time");
  time.textContent = new Date().toLocaleTimeString();
  const what = document.createElement("span");
  what.className = "what";
  what.textContent = text;
  item.append(time, what);
  events.prepend(item);
  while (events.children.length > MAX_EVENTS) events.lastElementChild.remove();
}

function show(element, text, kind) {
  element.textContent = text;
  element.className = kind;
}
