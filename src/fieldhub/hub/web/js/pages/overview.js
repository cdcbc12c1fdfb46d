// Fleet overview: every device the user may see, with presence and since-when, its last
// values and its problems; filters by site, group, state, text and software (a bundle, below
// a version); kept current by the live feed without reloading.

import { api, eachLimited } from "../api.js";
import { byId, deviceHref, h, replace, say } from "../dom.js";
import { value } from "../format.js";
import { maintenanceBanner } from "../maintenance.js";
import { fillPresence, presenceBadge } from "../presence.js";
import { problemsOf } from "../problems.js";
import { Permission, showError, startPage } from "../session.js";
import { bundleNames, SoftwareFilter } from "../software.js";

const MAX_ROWS = 500; // rows on the page at once; the filters narrow a larger fleet
const MAX_VALUES = 6; // last values shown per device
const DETAIL_CONCURRENCY = 6;
const STATES = ["online", "stale", "offline", "unreachable", "unknown"];

const devices = new Map(); // id → {device, latest, twin, row}
const status = byId("status");
const form = byId("filters");
let refreshing = null;
let alarmCounts = null; // AlarmCounts of the page (session.js)
const software = new SoftwareFilter();

function filters() {
  const data = new FormData(form);
  return {
    q: String(data.get("q") ?? "").trim().toLowerCase(),
    site: String(data.get("site") ?? ""),
    group: String(data.get("group") ?? ""),
    state: String(data.get("state") ?? ""),
    bundle: String(data.get("bundle") ?? ""),
    below: String(data.get("below") ?? "").trim(),
  };
}

// Every filter but "with problems" is decided by the device list alone. Problems also come
// from the twin, which is fetched per device: a device is a candidate by the list, and shown
// once its twin says it has problems (or its presence does).
function candidate(entry, f) {
  const { device } = entry;
  if (f.site && device.labels.site !== f.site) return false;
  if (f.group && device.labels.group !== f.group) return false;
  if (f.state && f.state !== "problems" && device.presence.state !== f.state) return false;
  if (f.q && !`${device.id} ${device.name}`.toLowerCase().includes(f.q)) return false;
  return software.matches(device.id);
}

function matches(entry, f) {
  if (f.state === "problems" && !problemsOf(entry.device, entry.twin).length) return false;
  return candidate(entry, f);
}

const needsTwins = () => filters().state === "problems";

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
  const row = h("tr", { dataset: { device: device.id } }, Object.values(cells));
  entry.row = row;
  entry.cells = cells;
  fillName(entry);
  fillValues(entry);
  fillProblems(entry);
  fillAlarms(entry);
  return row;
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

async function loadDetails(entry) {
  const id = encodeURIComponent(entry.device.id);
  try {
    const [latest, twin] = await Promise.all([
      api(`/api/devices/${id}/latest`),
      api(`/api/devices/${id}/state`),
    ]);
    entry.latest = latest;
    entry.twin = twin;
  } catch (error) {
    if (error.status === 404) return; // deleted meanwhile, or moved out of the user's sites
    throw error;
  }
  if (entry.row) {
    fillValues(entry);
    fillProblems(entry);
  }
  if (needsTwins()) renderSoon(); // the twin may put the device in the list, or out of it
  else summarize();
}

// -- the table ------------------------------------------------------------------------------

function render() {
  const f = filters();
  const candidates = [...devices.values()].filter((entry) => candidate(entry, f));
  const shown = candidates
    .filter((entry) => matches(entry, f))
    .sort((a, b) => a.device.id.localeCompare(b.device.id));
  const rows = shown.slice(0, MAX_ROWS).map((entry) => entry.row ?? makeRow(entry));
  replace(byId("device-rows"), rows);
  byId("empty").hidden = shown.length > 0 || devices.size === 0;
  const more = byId("more");
  more.hidden = shown.length <= MAX_ROWS;
  more.textContent = `Showing ${MAX_ROWS} of ${shown.length} devices: narrow the filters to see the rest.`;
  // Rows show each device's latest values and twin; "with problems" needs every candidate's
  // twin to know which devices to show at all (a bookmark opens it before any row was shown).
  const wanted = f.state === "problems" ? candidates : shown.slice(0, MAX_ROWS);
  const missing = wanted.filter((entry) => !entry.latest && !entry.loading);
  for (const entry of missing) entry.loading = true;
  eachLimited(missing, DETAIL_CONCURRENCY, loadDetails).catch((error) => showError(status, error));
  summarize();
}

// Details arrive device by device: the list is filtered again at most once a frame.
let renderFrame = 0;

function renderSoon() {
  renderFrame ||= requestAnimationFrame(() => {
    renderFrame = 0;
    render();
  });
}

function summarize() {
  const counts = Object.fromEntries(STATES.map((s) => [s, 0]));
  let troubled = 0;
  for (const entry of devices.values()) {
    counts[entry.device.presence.state] = (counts[entry.device.presence.state] ?? 0) + 1;
    if (problemsOf(entry.device, entry.twin).length) troubled += 1;
  }
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
      h("strong", { text: String(count) }),
      ` ${label}`,
    );
  replace(
    byId("summary"),
    h("span", { class: "total", text: `${devices.size} ${devices.size === 1 ? "device" : "devices"}` }),
    STATES.filter((s) => counts[s] || (s !== "unknown" && s !== "unreachable")).map((s) =>
      chip(s, counts[s], s),
    ),
    chip("problems", troubled, "with problems"),
  );
}

function fillOptions(select, values, none = "all") {
  const current = select.value;
  replace(
    select,
    h("option", { value: "", text: none }),
    [...values].sort().map((v) => h("option", { value: v, text: v })),
  );
  if ([...values].includes(current)) select.value = current;
}

function labelOptions() {
  const sites = new Set();
  const groups = new Set();
  for (const { device } of devices.values()) {
    if (device.labels.site) sites.add(device.labels.site);
    if (device.labels.group) groups.add(device.labels.group);
  }
  fillOptions(form.elements.site, sites);
  fillOptions(form.elements.group, groups);
  fillOptions(form.elements.bundle, bundleNames([...devices.values()].map((e) => e.device)), "any");
}

function changed() {
  const f = filters();
  const params = new URLSearchParams();
  for (const [key, v] of Object.entries(f)) if (v) params.set(key, v);
  const query = params.toString();
  history.replaceState(null, "", query ? `?${query}` : location.pathname);
  render();
  chooseSoftware(f);
}

/** The software filter's devices, from the hub; the list once they are known. */
function chooseSoftware(f = filters(), again = false) {
  software
    .choose(f.bundle, f.below, again)
    .then((current) => {
      if (!current) return;
      say(status, "");
      render();
    })
    .catch((error) => showError(status, error));
}

async function loadDevices() {
  const list = await api("/api/devices", { query: { limit: 10000 } });
  const seen = new Set();
  for (const device of list) {
    seen.add(device.id);
    const entry = devices.get(device.id);
    if (entry) {
      entry.device = device;
      entry.latest = null; // fetched again: something may have been missed
      entry.loading = false;
      if (entry.row) {
        fillName(entry);
        fillPresence(entry.cells.presence.firstChild, device.presence);
      }
    } else {
      devices.set(device.id, { device, latest: null, twin: null, row: null });
    }
  }
  for (const id of [...devices.keys()]) if (!seen.has(id)) devices.delete(id);
  labelOptions();
  render();
}

function refresh() {
  refreshing ??= loadDevices()
    .then(() => say(status, ""))
    .catch((error) => showError(status, error))
    .finally(() => {
      refreshing = null;
    });
  return refreshing;
}

// -- live -----------------------------------------------------------------------------------

const twinRefresh = new Map(); // id → timer: state changes fetch the twin (debounced)

function onTelemetry(message) {
  const entry = devices.get(message.device);
  if (!entry?.latest) return;
  const changedKeys = [];
  for (const [key, v] of Object.entries(message.values ?? {})) {
    const old = entry.latest[key];
    if (!old || old.ts <= message.ts) {
      entry.latest[key] = { ts: message.ts, value: v };
      changedKeys.push(key);
    }
  }
  if (entry.row && changedKeys.length) later(entry, changedKeys);
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

function onPresence(message) {
  const entry = devices.get(message.device);
  if (!entry) return;
  entry.device = { ...entry.device, presence: message.presence };
  if (entry.row) {
    fillPresence(entry.cells.presence.firstChild, message.presence);
    fillProblems(entry);
  }
  if (form.elements.state.value) render();
  else summarize();
}

let softwareTimer = 0;

function onState(message) {
  const entry = devices.get(message.device);
  if (!entry) return;
  if (message.reported?.software !== undefined) {
    entry.device = { ...entry.device, software: message.reported.software };
    labelOptions();
    clearTimeout(softwareTimer); // a rollout changes many devices at once: ask once for them
    if (software.active) softwareTimer = setTimeout(() => chooseSoftware(filters(), true), 500);
  }
  if (entry.twin) {
    entry.twin = { ...entry.twin, reported: { ...entry.twin.reported, ...message.reported } };
    for (const [key, v] of Object.entries(message.reported ?? {})) {
      if (v === null) delete entry.twin.reported[key];
    }
    if (entry.row) fillProblems(entry);
    if (needsTwins()) renderSoon();
    else summarize();
  }
  clearTimeout(twinRefresh.get(message.device));
  twinRefresh.set(
    message.device,
    setTimeout(() => {
      twinRefresh.delete(message.device);
      if (entry.latest) loadDetails(entry).catch(() => {});
    }, 1000),
  );
}

async function onDevice(message) {
  const id = message.device;
  let device = null;
  if (message.change !== "deleted") {
    try {
      device = await api(`/api/devices/${encodeURIComponent(id)}`);
    } catch (error) {
      if (error.status !== 404) throw error; // 404: moved out of the user's sites
    }
  }
  const entry = devices.get(id);
  if (!device) {
    devices.delete(id);
  } else if (entry) {
    entry.device = device;
    if (entry.row) {
      fillName(entry);
      fillPresence(entry.cells.presence.firstChild, device.presence);
    }
  } else {
    devices.set(id, { device, latest: null, twin: null, row: null });
  }
  labelOptions();
  render();
}

// -- start ----------------------------------------------------------------------------------

async function main() {
  const { me, live, alarms } = await startPage("overview");
  alarmCounts = alarms;
  if (me.can(Permission.ALARMS_READ)) maintenanceBanner();
  alarms.on(() => {
    for (const entry of devices.values()) if (entry.row) fillAlarms(entry);
  });
  const params = new URLSearchParams(location.search);
  form.elements.q.value = params.get("q") ?? "";
  form.elements.state.value = params.get("state") ?? "";
  form.addEventListener("input", changed);
  form.addEventListener("submit", (event) => event.preventDefault());
  live
    .on("telemetry", onTelemetry)
    .on("presence", onPresence)
    .on("state", onState)
    .on("device", (message) => onDevice(message).catch((error) => showError(status, error)))
    .on("resync", refresh)
    .subscribe({ all: true, topics: ["telemetry", "presence", "state", "device"] })
    .start();
  await refresh();
  // Labels are known once the devices are: now the site and group of the address apply.
  form.elements.site.value = params.get("site") ?? "";
  form.elements.group.value = params.get("group") ?? "";
  form.elements.bundle.value = params.get("bundle") ?? "";
  form.elements.below.value = params.get("below") ?? "";
  if (params.get("bundle")) chooseSoftware();
  if (params.get("site") || params.get("group")) render();
}

main().catch((error) => showError(status, error));
