// Fleet overview: the user's devices a page at a time, with presence and since-when, their last
// values and problems; counts of the whole fleet above. The hub filters, sorts and pages
// (GET /api/devices), counts (GET /api/fleet/summary) and gives a page's values and twins in
// one request (GET /api/fleet/details): a fleet of 10,000 costs three requests, not 20,000.
// Filters (software too: a bundle, and below a version, as the hub decides it for rollouts),
// sort and page stay in the address; the live feed updates the rows shown and, at most once a
// second, the counts.

import { api, apiPage } from "../api.js";
import { byId, deviceHref, h, replace, say } from "../dom.js";
import { value } from "../format.js";
import { maintenanceBanner } from "../maintenance.js";
import { fillPresence, presenceBadge } from "../presence.js";
import { problemsOf } from "../problems.js";
import { Permission, showError, startPage } from "../session.js";

const PAGE_SIZE = 100; // rows on the page at once; the pager shows the others
const MAX_VALUES = 6; // last values shown per device
const STATES = ["online", "stale", "offline", "unreachable", "unknown"];
const COUNTS_EVERY_MS = 1000; // live changes read the counts again at most this often
const FIELDS = ["q", "site", "group", "state", "bundle", "below", "sort"];

const rows = new Map(); // id → {device, latest, twin, row, cells}: the devices shown
const status = byId("status");
const form = byId("filters");
let page = 0;
let total = 0;
let summary = null;
let alarmCounts = null; // AlarmCounts of the page (session.js)
let loading = null; // the page being read: a newer request aborts it

function filters() {
  const data = new FormData(form);
  return Object.fromEntries(FIELDS.map((key) => [key, String(data.get(key) ?? "").trim()]));
}

/** The list request for the filters: what the hub narrows, sorts and pages. */
function listQuery(f) {
  const query = { limit: PAGE_SIZE, offset: page * PAGE_SIZE, q: f.q };
  query.label = [f.site && `site=${f.site}`, f.group && `group=${f.group}`].filter(Boolean);
  if (STATES.includes(f.state)) query.presence = f.state;
  else if (f.state === "problems") query.problems = true;
  else if (f.state === "alarmed") query.alarmed = true;
  if (f.bundle) query.bundle = f.bundle;
  if (f.bundle && f.below) query.below = f.below;
  const sort = f.sort || "id";
  query.sort = sort.replace(/^-/, "");
  query.order = sort.startsWith("-") ? "desc" : "asc";
  return query;
}

// -- rows -------------------------------------------------------------------------------------

function makeRow(entry) {
  const { device } = entry;
  const cells = {
    name: h("td", { class: "device-name", "data-label": "Device" }),
    where: h("td", { "data-label": "Site · group" }),
    presence: h("td", { "data-label": "Presence" }, presenceBadge(device.presence)),
    values: h("td", { class: "values", "data-label": "Last values" }),
    problems: h("td", { class: "problems", "data-label": "Problems" }),
    alarms: h("td", { class: "alarm-count", "data-label": "Alarms" }),
  };
  entry.row = h("tr", { dataset: { device: device.id } }, Object.values(cells));
  entry.cells = cells;
  fillName(entry);
  fillValues(entry);
  fillProblems(entry);
  fillAlarms(entry);
  return entry.row;
}

/** The device's open alarms: how many and the highest severity, a link to them. */
function fillAlarms(entry) {
  const cell = entry.cells.alarms;
  const count = alarmCounts?.device(entry.device.id) ?? { open: 0, severity: null, shelved: 0 };
  cell.classList.toggle("none", count.open + count.shelved === 0);
  if (!count.open && !count.shelved) {
    replace(cell, h("span", { class: "muted", text: alarmCounts?.loaded ? "none" : "…" }));
    return;
  }
  const href = `/alarms?device=${encodeURIComponent(entry.device.id)}`;
  const title = [
    count.open ? `${count.open} open, the highest ${count.severity}` : null,
    count.shelved ? `${count.shelved} shelved` : null,
  ].filter(Boolean).join("; ");
  replace(
    cell,
    h(
      "a",
      { class: `chip alarm-chip ${count.severity ?? "shelved"}`, href, title },
      count.open ? `${count.open} ${count.severity}` : `${count.shelved} shelved`,
    ),
  );
}

function fillName(entry) {
  const { device, cells } = entry;
  replace(
    cells.name,
    h("a", { href: deviceHref(device.id), text: device.name || device.id }),
    device.name ? h("span", { class: "id", text: device.id }) : null,
  );
  const where = [device.labels.site, device.labels.group].filter(Boolean).join(" · ");
  cells.where.textContent = where || "—";
}

function fillValues(entry, changed = []) {
  const latest = entry.latest;
  if (!latest) {
    replace(entry.cells.values, h("span", { class: "muted", text: "…" }));
    return;
  }
  const keys = Object.keys(latest).sort().slice(0, MAX_VALUES);
  if (!keys.length) {
    replace(entry.cells.values, h("span", { class: "muted", text: "no data yet" }));
    return;
  }
  replace(
    entry.cells.values,
    keys.map((key) =>
      h(
        "span",
        { class: changed.includes(key) ? "kv flash" : "kv", dataset: { key } },
        h("span", { class: "k", text: key }),
        h("span", { class: "v", text: value(latest[key].value) }),
      ),
    ),
  );
}

function fillProblems(entry) {
  const problems = problemsOf(entry.device, entry.twin);
  entry.cells.problems.classList.toggle("none", problems.length === 0);
  replace(
    entry.cells.problems,
    problems.length
      ? problems.map((p) => h("span", { class: `chip ${p.severity}`, text: p.text }))
      : h("span", { class: "muted", text: entry.twin ? "none" : "…" }),
  );
}

/** Latest values and twins of the rows shown: one request for the page. */
async function loadDetails(entries, signal) {
  if (!entries.length) return;
  const query = { device: entries.map((entry) => entry.device.id) };
  const details = await api("/api/fleet/details", { query, signal });
  for (const entry of entries) {
    const found = details[entry.device.id];
    if (!found || rows.get(entry.device.id) !== entry) continue; // gone, or another page
    entry.latest = found.latest;
    entry.twin = found.twin;
    fillValues(entry);
    fillProblems(entry);
  }
}

// -- the page ---------------------------------------------------------------------------------

/** Read the page of devices the filters and the pager say, then its details. */
async function loadPage() {
  loading?.abort();
  const controller = new AbortController();
  loading = controller;
  const { items, total: matching } = await apiPage("/api/devices", {
    query: listQuery(filters()),
    signal: controller.signal,
  });
  total = matching;
  if (page > 0 && page * PAGE_SIZE >= total) {
    page = Math.max(0, Math.ceil(total / PAGE_SIZE) - 1); // the filter left fewer pages
    return loadPage();
  }
  const kept = new Map();
  for (const device of items) {
    const entry = rows.get(device.id) ?? { device, latest: null, twin: null, row: null };
    entry.device = device;
    kept.set(device.id, entry);
  }
  rows.clear();
  for (const [id, entry] of kept) rows.set(id, entry);
  replace(
    byId("device-rows"),
    [...rows.values()].map((entry) => {
      if (!entry.row) return makeRow(entry);
      fillName(entry);
      fillPresence(entry.cells.presence.firstChild, entry.device.presence);
      fillProblems(entry);
      return entry.row;
    }),
  );
  byId("empty").hidden = total > 0 || !summary?.total;
  pager();
  await loadDetails([...rows.values()], controller.signal);
}

function pager() {
  const first = total ? page * PAGE_SIZE + 1 : 0;
  const last = Math.min(total, (page + 1) * PAGE_SIZE);
  byId("range").textContent = `${first.toLocaleString("en")}–${last.toLocaleString("en")} of ${total.toLocaleString("en")}`;
  byId("previous").disabled = page === 0;
  byId("next").disabled = last >= total;
  byId("pager").hidden = total === 0;
}

function turn(by) {
  page += by;
  keepInAddress();
  show();
}

function show() {
  loadPage()
    .then(() => say(status, ""))
    .catch((error) => {
      if (error.name !== "AbortError") showError(status, error);
    });
}

// -- the counts ---------------------------------------------------------------------------------

async function loadSummary() {
  summary = await api("/api/fleet/summary");
  const chip = (state, count, label) =>
    h(
      "button",
      {
        type: "button",
        class: `count ${state}`,
        dataset: { state },
        onclick: () => {
          form.elements.state.value = form.elements.state.value === state ? "" : state;
          changed();
        },
      },
      h("strong", { text: count.toLocaleString("en") }),
      ` ${label}`,
    );
  const counts = summary.presence;
  const noun = summary.total === 1 ? "device" : "devices";
  replace(
    byId("summary"),
    h("span", { class: "total", text: `${summary.total.toLocaleString("en")} ${noun}` }),
    STATES.filter((s) => counts[s] || (s !== "unknown" && s !== "unreachable")).map((s) =>
      chip(s, counts[s] ?? 0, s),
    ),
    chip("problems", summary.problems, "with problems"),
    summary.alarmed ? chip("alarmed", summary.alarmed, "with open alarms") : null,
  );
  fillOptions(form.elements.site, Object.keys(summary.sites).filter(Boolean));
  fillOptions(form.elements.group, Object.keys(summary.groups).filter(Boolean));
  byId("empty").hidden = total > 0 || !summary.total;
}

/** The software filter's choice: the bundles the hub holds (the address's own stays). */
async function loadBundles() {
  const bundles = await api("/api/bundles");
  fillOptions(form.elements.bundle, new Set(bundles.map((b) => b.name)), "any");
}

let countsTimer = 0;

/** Something changed somewhere in the fleet: the counts are read again, at most once a second. */
function countsSoon() {
  countsTimer ||= setTimeout(() => {
    countsTimer = 0;
    loadSummary().catch((error) => showError(status, error));
  }, COUNTS_EVERY_MS);
}

/** Fill a filter's choices with `values`; the current choice stays, even when none has it. */
function fillOptions(select, values, none = "all") {
  const current = select.value;
  const sorted = [...new Set([...values, current].filter(Boolean))].sort();
  replace(
    select,
    h("option", { value: "", text: none }),
    sorted.map((v) => h("option", { value: v, text: v })),
  );
  if (sorted.includes(current)) select.value = current;
}

// -- the address --------------------------------------------------------------------------------

function keepInAddress() {
  const params = new URLSearchParams();
  for (const [key, v] of Object.entries(filters())) if (v) params.set(key, v);
  if (page) params.set("page", String(page + 1));
  const query = params.toString();
  history.replaceState(null, "", query ? `?${query}` : location.pathname);
}

function changed() {
  page = 0;
  keepInAddress();
  show();
}

/** The address's filters, before the options exist (a bookmark's site keeps its value). */
function fromAddress() {
  const params = new URLSearchParams(location.search);
  for (const key of FIELDS) {
    const field = form.elements[key];
    const wanted = params.get(key) ?? "";
    if (field.tagName === "SELECT" && wanted && ![...field.options].some((o) => o.value === wanted)) {
      field.append(h("option", { value: wanted, text: wanted }));
    }
    field.value = wanted;
  }
  page = Math.max(0, Number.parseInt(params.get("page") ?? "1", 10) - 1 || 0);
}

// -- live -----------------------------------------------------------------------------------

function onTelemetry(message) {
  const entry = rows.get(message.device);
  if (!entry?.latest) return;
  const changedKeys = [];
  for (const [key, v] of Object.entries(message.values ?? {})) {
    const old = entry.latest[key];
    if (!old || old.ts <= message.ts) {
      entry.latest[key] = { ts: message.ts, value: v };
      changedKeys.push(key);
    }
  }
  if (changedKeys.length) later(entry, changedKeys);
}

// A busy fleet sends many values a second: the rows are redrawn at most once a frame.
const redraw = new Map(); // entry → keys changed since the last frame
let frame = 0;

function later(entry, keys) {
  if (!redraw.has(entry)) redraw.set(entry, new Set());
  for (const key of keys) redraw.get(entry).add(key);
  frame ||= requestAnimationFrame(() => {
    frame = 0;
    for (const [pending, changed] of redraw) fillValues(pending, [...changed]);
    redraw.clear();
  });
}

let pageTimer = 0;

/** The page's own rows may have changed which devices it holds: read it again, soon. */
function pageSoon() {
  pageTimer ||= setTimeout(() => {
    pageTimer = 0;
    show();
  }, COUNTS_EVERY_MS);
}

function onPresence(message) {
  countsSoon();
  const entry = rows.get(message.device);
  if (entry) {
    entry.device = { ...entry.device, presence: message.presence };
    fillPresence(entry.cells.presence.firstChild, message.presence);
    fillProblems(entry);
  }
  const f = filters();
  if (f.state || f.sort.endsWith("presence") || f.sort.endsWith("last_seen")) pageSoon();
}

function onState(message) {
  const entry = rows.get(message.device);
  if (!entry?.twin) return;
  const reported = { ...entry.twin.reported, ...message.reported };
  for (const [key, v] of Object.entries(message.reported ?? {})) {
    if (v === null) delete reported[key];
  }
  entry.twin = { ...entry.twin, reported };
  fillProblems(entry);
  pageSoon(); // the twin's sync is the hub's to judge: the page's details are read again
}

function onDevice() {
  countsSoon();
  pageSoon();
}

// -- start ----------------------------------------------------------------------------------

async function main() {
  const { me, live, alarms } = await startPage("overview");
  alarmCounts = alarms;
  if (me.can(Permission.ALARMS_READ)) maintenanceBanner();
  alarms.on(() => {
    for (const entry of rows.values()) fillAlarms(entry);
  });
  fromAddress();
  form.addEventListener("input", changed);
  form.addEventListener("submit", (event) => event.preventDefault());
  byId("previous").addEventListener("click", () => turn(-1));
  byId("next").addEventListener("click", () => turn(1));
  live
    .on("telemetry", onTelemetry)
    .on("presence", onPresence)
    .on("state", onState)
    .on("device", onDevice)
    .on("resync", () => {
      countsSoon();
      show();
    })
    .subscribe({ all: true, topics: ["telemetry", "presence", "state", "device"] })
    .start();
  show(); // a newer choice of the user aborts it: its errors are show()'s to tell
  loadBundles().catch((error) => showError(status, error));
  await loadSummary();
}

main().catch((error) => showError(status, error));
