// Rollouts: the list, and one rollout (`?id=`) with each of the user's devices. Progress is
// live: the page hears the install and rollback commands and the bundle.* events of the
// devices through the live feed, and reads the rollout again over REST (the feed says that
// something moved, the API what the rollout is now), at most a few times a second.

import { api } from "../api.js";
import { byId, deviceHref, h, replace, say } from "../dom.js";
import { ago } from "../format.js";
import { Permission, showError, startPage } from "../session.js";

const REFRESH_MS = 300;
const ACTIONS = {
  running: ["pause", "abort"],
  waiting: ["approve", "abort"],
  paused: ["resume", "abort"],
  completed: ["retry"],
};
const status = byId("status");
const rolloutId = new URLSearchParams(location.search).get("id");
let canCommand = false;
let pending = null;

const counts = (shown) =>
  Object.entries(shown.counts)
    .sort()
    .map(([state, n]) => `${n} ${state}`)
    .join(", ") || "no devices";

function listRow(rollout) {
  const link = h("a", { href: `/rollouts?id=${encodeURIComponent(rollout.id)}`, text: rollout.id });
  return h(
    "tr",
    { dataset: { id: rollout.id } },
    h("td", { "data-label": "Rollout" }, link, " ", h("span", { class: "muted", text: ago(rollout.created_at) })),
    h("td", { "data-label": "Bundle", text: `${rollout.bundle.name} ${rollout.bundle.version}` }),
    h("td", { "data-label": "Status" }, h("span", { class: `badge ${rollout.status}`, text: rollout.status })),
    h("td", { "data-label": "Wave", text: `${rollout.wave + 1} of ${rollout.waves}` }),
    h("td", { "data-label": "Devices", class: "counts", text: counts(rollout) }),
  );
}

function deviceRow(device) {
  return h(
    "tr",
    { dataset: { device: device.device_id, state: device.state } },
    h("td", { "data-label": "Device" }, h("a", { href: deviceHref(device.device_id), text: device.device_id })),
    h("td", { "data-label": "Wave", text: String(device.wave + 1) }),
    h("td", { "data-label": "State" }, h("span", { class: `badge ${device.state}`, text: device.state })),
    h("td", { "data-label": "Attempts", text: String(device.attempts) }),
    h("td", { "data-label": "Why", text: device.reason }),
  );
}

async function act(action) {
  say(status, "");
  try {
    const body = action === "abort" ? {} : undefined;
    await api(`/api/rollouts/${encodeURIComponent(rolloutId)}/${action}`, { method: "POST", body });
    await refresh();
  } catch (error) {
    showError(status, error);
  }
}

function showDetail(rollout) {
  byId("title").textContent = `Rollout ${rollout.id}: ${rollout.bundle.name} ${rollout.bundle.version}`;
  const badge = byId("rollout-status");
  badge.textContent = rollout.status;
  badge.className = `badge ${rollout.status}`;
  byId("rollout-wave").textContent = `wave ${rollout.wave + 1} of ${rollout.waves}`;
  byId("rollout-reason").textContent = rollout.reason;
  byId("rollout-counts").textContent = counts(rollout);
  const actions = canCommand ? (ACTIONS[rollout.status] ?? []) : [];
  replace(
    byId("rollout-actions"),
    actions.map((action) => h("button", { type: "button", text: action, dataset: { action }, onclick: () => act(action) })),
  );
  replace(byId("device-rows"), (rollout.devices ?? []).map(deviceRow));
  return (rollout.devices ?? []).map((device) => device.device_id);
}

async function refresh() {
  if (rolloutId) return showDetail(await api(`/api/rollouts/${encodeURIComponent(rolloutId)}`));
  const rollouts = await api("/api/rollouts");
  replace(byId("rollout-rows"), rollouts.map(listRow));
  byId("no-rollouts").hidden = rollouts.length > 0;
  return null;
}

/** Read the rollout(s) again soon: a burst of device messages costs one request. */
function soon() {
  if (pending) return;
  pending = setTimeout(() => {
    pending = null;
    refresh().catch((error) => showError(status, error));
  }, REFRESH_MS);
}

async function main() {
  const { me, live } = await startPage("rollouts");
  canCommand = me.can(Permission.DEVICES_COMMAND);
  byId("list-view").hidden = Boolean(rolloutId);
  byId("detail-view").hidden = !rolloutId;
  byId("crumbs").hidden = !rolloutId;
  const devices = await refresh();
  const bundleMessage = (message) => message.type !== "event" || String(message.event?.type ?? "").startsWith("bundle.");
  live
    .on("command", soon)
    .on("event", (message) => bundleMessage(message) && soon())
    .on("resync", soon)
    .subscribe(devices ? { devices, topics: ["command", "event"] } : { all: true, topics: ["command", "event"] })
    .start();
}

main().catch((error) => showError(status, error));
