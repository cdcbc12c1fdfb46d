// Device page: presence, what it runs (agent version, bundles), latest values, charts with
// history and live points, the twin, command buttons from the device's action catalog with
// their outcomes, recent events.

import { showAge } from "../ages.js";
import { api, ApiError } from "../api.js";
import { byId, h, replace, say } from "../dom.js";
import { ago, dateTime, value } from "../format.js";
import { RANGES, TelemetryCharts } from "../charts.js";
import { parentLink, showChildren } from "../children.js";
import { CommandPanel } from "../commands.js";
import { deviceAlarms } from "../devicealarms.js";
import { eventRow, mediaArrived } from "../eventlist.js";
import { maintenanceBanner } from "../maintenance.js";
import { fillPresence, presenceBadge } from "../presence.js";
import { problemsOf } from "../problems.js";
import { ACTION_DETAILS, ACTIONS } from "../reported.js";
import { Permission, showError, startPage } from "../session.js";
import { softwareParts } from "../software.js";
import { renderTwin } from "../twin.js";

const EVENTS_SHOWN = 20;
const deviceId = decodeURIComponent(location.pathname.split("/")[2] ?? "");
const status = byId("status");
const state = { device: null, latest: {}, twin: null };
let charts;
let commands;
let live;

const lastMessage = (ts, now) => (ts ? `last message ${ago(ts, now)}` : "no message yet");

function showHeader() {
  const { device } = state;
  document.title = `${device.name || device.id} · fieldhub`;
  byId("title").textContent = device.name || device.id;
  byId("crumb").textContent = device.id;
  const presence = byId("presence");
  if (presence.firstChild) fillPresence(presence.firstChild, device.presence);
  else presence.append(presenceBadge(device.presence));
  const labels = Object.entries(device.labels).map(([k, v]) => `${k}=${v}`).join(", ");
  replace(
    byId("meta"),
    h("span", { class: "id", text: device.id }),
    parentLink(device),
    labels ? h("span", { text: labels }) : null,
    showAge(h("span", { id: "last-seen" }), device.presence.last_seen, lastMessage),
  );
}

/**
 * A message of the device came through the live feed: its "last message" is at least as new.
 * Its own time (what the tiles count from), so the header and the tiles agree.
 */
function heard(ts) {
  if (!state.device || !(ts > (state.device.presence.last_seen ?? 0))) return;
  state.device = { ...state.device, presence: { ...state.device.presence, last_seen: ts } };
  showAge(byId("last-seen"), ts, lastMessage);
}

function showProblems() {
  const problems = problemsOf(state.device, state.twin);
  replace(byId("problems"), problems.map((p) => h("span", { class: `chip ${p.severity}`, text: p.text })));
}

function numericKeys() {
  return Object.entries(state.latest)
    .filter(([, v]) => typeof v.value === "number")
    .map(([key]) => key);
}

function showLatest(changed = []) {
  const keys = Object.keys(state.latest).sort();
  replace(
    byId("latest"),
    keys.length
      ? keys.map((key) =>
          h(
            "div",
            { class: changed.includes(key) ? "tile flash" : "tile", dataset: { key } },
            h("span", { class: "k", text: key }),
            h("span", { class: "v", text: value(state.latest[key].value) }),
            showAge(h("span", { class: "when", title: dateTime(state.latest[key].ts) }), state.latest[key].ts),
          ),
        )
      : h("p", { class: "muted", text: "No telemetry yet." }),
  );
}

function showTwin() {
  renderTwin(byId("twin"), state.twin);
  const reported = state.twin.reported ?? {};
  replace(byId("software"), softwareParts(reported.software));
  commands.setCatalog(state.twin.reported?.[ACTIONS], state.twin.reported?.[ACTION_DETAILS]);
  showProblems();
}

function addEvent(event, fresh) {
  const rows = byId("event-rows");
  if (rows.querySelector(`tr[data-event="${CSS.escape(String(event.id))}"]`)) return;
  rows.prepend(eventRow(event, { device: false, fresh }));
  while (rows.children.length > EVENTS_SHOWN) rows.lastElementChild.remove();
  byId("no-events").hidden = true;
}

async function loadEvents() {
  const page = await api("/api/events", { query: { device: deviceId, limit: EVENTS_SHOWN } });
  replace(byId("event-rows"), page.events.map((event) => eventRow(event, { device: false })));
  byId("no-events").hidden = page.events.length > 0;
}

async function loadAll() {
  const id = encodeURIComponent(deviceId);
  const [device, latest, twin] = await Promise.all([
    api(`/api/devices/${id}`),
    api(`/api/devices/${id}/latest`),
    api(`/api/devices/${id}/state`),
  ]);
  Object.assign(state, { device, latest, twin });
  showHeader();
  showLatest();
  showTwin();
  await Promise.all([loadEvents(), commands.loadRecent(), charts.refresh(numericKeys())]);
}

let childrenShown = false;
async function loadChildren() {
  if (childrenShown) return; // the live feed keeps them current from then on
  childrenShown = true;
  await showChildren(deviceId, live);
}

function rangeButtons() {
  const group = byId("ranges");
  const buttons = RANGES.map((range) =>
    h("button", {
      type: "button",
      class: "range",
      text: range.label,
      "aria-pressed": range === charts.range ? "true" : "false",
      onclick: async (event) => {
        for (const b of buttons) {
          b.setAttribute("aria-pressed", b === event.currentTarget ? "true" : "false");
        }
        try {
          await charts.show(numericKeys(), range);
        } catch (error) {
          showError(status, error);
        }
      },
    }),
  );
  replace(group, buttons);
}

// -- live -----------------------------------------------------------------------------------

function onTelemetry(message) {
  if (message.device !== deviceId) return;
  const changed = [];
  for (const [key, v] of Object.entries(message.values ?? {})) {
    if (!state.latest[key] || state.latest[key].ts <= message.ts) {
      state.latest[key] = { ts: message.ts, value: v };
      changed.push(key);
    }
  }
  showLatest(changed);
  charts.add(message.ts, message.values ?? {});
  heard(message.ts);
}

function onPresence(message) {
  if (message.device !== deviceId || !state.device) return;
  state.device = { ...state.device, presence: message.presence };
  showHeader();
  showProblems();
}

let twinTimer = null;
function onState(message) {
  if (message.device !== deviceId || !state.twin) return;
  const reported = { ...state.twin.reported };
  for (const [key, v] of Object.entries(message.reported ?? {})) {
    if (v === null) delete reported[key];
    else reported[key] = v;
  }
  state.twin = { ...state.twin, reported, reported_ts: message.ts };
  showTwin();
  heard(message.ts);
  clearTimeout(twinTimer); // delta and in_sync are the hub's to say: ask it, shortly
  twinTimer = setTimeout(async () => {
    try {
      state.twin = await api(`/api/devices/${encodeURIComponent(deviceId)}/state`);
      showTwin();
    } catch (error) {
      showError(status, error);
    }
  }, 500);
}

function onDevice(message) {
  if (message.device !== deviceId) return;
  if (message.change === "deleted") {
    say(status, "This device was deleted.", "error");
    live.stop();
    return;
  }
  api(`/api/devices/${encodeURIComponent(deviceId)}`)
    .then((device) => {
      state.device = device;
      showHeader();
    })
    .catch((error) => showError(status, error));
}

// -- start ----------------------------------------------------------------------------------

async function main() {
  const started = await startPage("overview"); // a device is part of the fleet
  const { me } = started;
  live = started.live;
  byId("all-events").href = `/events?device=${encodeURIComponent(deviceId)}`;
  charts = new TelemetryCharts(byId("charts"), deviceId);
  commands = new CommandPanel(byId("actions"), byId("command-log"), deviceId, {
    allowed: me.can(Permission.DEVICES_COMMAND),
    role: me.user.role,
    isLive: () => byId("live-state").dataset.state === "live",
  });
  rangeButtons();
  if (me.can(Permission.ALARMS_READ)) maintenanceBanner(deviceId);
  const alarms = me.can(Permission.ALARMS_READ)
    ? deviceAlarms({ deviceId, canWrite: me.can(Permission.ALARMS_WRITE), live })
    : null;
  live
    .on("telemetry", onTelemetry)
    .on("event", (message) => {
      if (message.device !== deviceId) return;
      addEvent(message.event, true);
      if (message.event.seq !== null) heard(message.event.ts); // the hub's own have no seq
    })
    .on("media", (message) => mediaArrived(byId("event-rows"), message))
    .on("presence", onPresence)
    .on("state", onState)
    .on("command", (message) => commands.upsert(message.command))
    .on("device", onDevice)
    .on("resync", () => loadAll().catch((error) => showError(status, error)))
    .on("resync", () => alarms?.load().catch((error) => showError(status, error)))
    .subscribe({ devices: [deviceId] })
    .start();
  try {
    await Promise.all([loadAll(), alarms?.load()]);
    await loadChildren();
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      live.stop();
      alarms?.hide();
      byId("title").textContent = deviceId;
      say(status, "No such device, or not one of your sites.", "error");
      return;
    }
    throw error;
  }
}

main().catch((error) => showError(status, error));
