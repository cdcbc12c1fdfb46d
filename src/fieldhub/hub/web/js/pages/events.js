// Event log: every event the user may see, newest first, filtered by device, type, severity
// and time, paged with the API's cursor; new events that match appear at the top, live.

import { api } from "../api.js";
import { DevicePicker } from "../devicepicker.js";
import { byId, say } from "../dom.js";
import { dateTime, fromInputTime, toInputTime } from "../format.js";
import { eventRow, mediaArrived, typeMatches } from "../eventlist.js";
import { showError, startPage } from "../session.js";

const PAGE = 50;
const form = byId("filters");
const rows = byId("event-rows");
const status = byId("status");
const older = byId("older");
let query = {};
let cursor = null;
let shown = new Set();

function readForm() {
  const data = new FormData(form);
  const devices = String(data.get("device") ?? "")
    .split(",")
    .map((d) => d.trim())
    .filter(Boolean);
  return {
    device: devices,
    type: String(data.get("type") ?? "").trim(),
    severity: data.getAll("severity").map(String),
    start: fromInputTime(String(data.get("start") ?? "")),
    end: fromInputTime(String(data.get("end") ?? "")),
  };
}

function writeForm(q) {
  form.elements.device.value = q.device.join(", ");
  form.elements.type.value = q.type;
  for (const box of form.querySelectorAll('input[name="severity"]')) {
    box.checked = q.severity.includes(box.value);
  }
  form.elements.start.value = toInputTime(q.start);
  form.elements.end.value = toInputTime(q.end);
}

function fromAddress() {
  const params = new URLSearchParams(location.search);
  const number = (key) => (params.get(key) ? Number(params.get(key)) : null);
  return {
    device: params.getAll("device"),
    type: params.get("type") ?? "",
    severity: params.getAll("severity"),
    start: number("start"),
    end: number("end"),
  };
}

function toAddress(q) {
  const params = new URLSearchParams();
  for (const d of q.device) params.append("device", d);
  if (q.type) params.set("type", q.type);
  for (const s of q.severity) params.append("severity", s);
  if (q.start !== null) params.set("start", String(q.start));
  if (q.end !== null) params.set("end", String(q.end));
  const text = params.toString();
  history.replaceState(null, "", text ? `?${text}` : location.pathname);
}

function apiQuery(q) {
  return {
    device: q.device,
    type: q.type || null,
    severity: q.severity,
    start: q.start,
    end: q.end,
    limit: PAGE,
  };
}

async function loadPage(first) {
  const page = await api("/api/events", { query: { ...apiQuery(query), cursor: first ? null : cursor } });
  if (first) {
    rows.replaceChildren();
    shown = new Set();
  }
  for (const event of page.events) {
    if (shown.has(event.id)) continue;
    shown.add(event.id);
    rows.append(eventRow(event));
  }
  cursor = page.next_cursor;
  older.hidden = !cursor;
  byId("no-events").hidden = shown.size > 0;
}

/** Say which filters are on (the summary line, seen also when the filters are folded). */
function filterSummary(q) {
  const parts = [];
  if (q.device.length) parts.push(q.device.join(", "));
  if (q.type) parts.push(q.type);
  if (q.severity.length) parts.push(q.severity.join(", "));
  if (q.start !== null || q.end !== null) {
    const from = q.start !== null ? dateTime(q.start) : "…";
    parts.push(`${from} – ${q.end !== null ? dateTime(q.end) : "now"}`);
  }
  byId("filter-summary").textContent = parts.length ? `: ${parts.join(" · ")}` : ": none";
}

function liveNote() {
  const live = query.end === null || query.end > Date.now();
  byId("live-note").textContent = live
    ? "Newest first. New events that match appear at the top as they happen."
    : `Newest first, up to ${dateTime(query.end)}.`;
}

async function apply() {
  query = readForm();
  toAddress(query);
  filterSummary(query);
  liveNote();
  say(status, "");
  try {
    await loadPage(true);
  } catch (error) {
    showError(status, error);
  }
}

function onEvent(message) {
  const event = message.event;
  if (!event || shown.has(event.id)) return;
  const q = query;
  if (q.end !== null && event.ts >= q.end) return;
  if (q.start !== null && event.ts < q.start) return;
  if (q.device.length && !q.device.includes(event.device_id)) return;
  if (q.severity.length && !q.severity.includes(event.severity)) return;
  if (q.type && !typeMatches(event.type, q.type)) return;
  shown.add(event.id);
  rows.prepend(eventRow(event, { fresh: true }));
  byId("no-events").hidden = true;
}

async function main() {
  const { live } = await startPage("events");
  query = fromAddress();
  writeForm(query);
  new DevicePicker(form.elements.device, { several: true });
  filterSummary(query);
  // Unfolded on a wide screen; on a phone folded, so the events come first.
  byId("filter-box").open = matchMedia("(min-width: 600px)").matches;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    apply();
  });
  form.addEventListener("reset", () => setTimeout(apply));
  form.addEventListener("change", (event) => {
    if (event.target.type === "checkbox") apply();
  });
  for (const button of form.querySelectorAll("button[data-last]")) {
    button.addEventListener("click", () => {
      const last = Number(button.dataset.last);
      form.elements.start.value = last ? toInputTime(Date.now() - last) : "";
      form.elements.end.value = "";
      apply();
    });
  }
  older.addEventListener("click", () => loadPage(false).catch((error) => showError(status, error)));
  live
    .on("event", onEvent)
    .on("media", (message) => mediaArrived(rows, message))
    .on("resync", () => loadPage(true).catch((error) => showError(status, error)))
    .subscribe({ all: true, topics: ["event"] })
    .start();
  liveNote();
  await loadPage(true);
}

main().catch((error) => showError(status, error));
