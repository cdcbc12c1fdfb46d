// Alarms: the alarms of the user's devices, open ones first, newest first; filters by state,
// severity, device and "assigned to me" kept in the address (a bookmark opens the same view); a row opens into
// its history and actions. New alarms and changes arrive through the live feed: each change
// is read again over REST (the feed says what changed, the API what it is now).

import { AlarmTable, RuleBook } from "../alarmlist.js";
import { api } from "../api.js";
import { DeviceNames } from "../devicenames.js";
import { DevicePicker } from "../devicepicker.js";
import { byId, say } from "../dom.js";
import { maintenanceBanner } from "../maintenance.js";
import { Permission, showError, startPage } from "../session.js";

const PAGE = 100;
const STATES = { "": ["active", "acknowledged"], any: [] }; // the others are themselves
const CHOICES = new Set(["", "active", "acknowledged", "cleared", "any"]);
const form = byId("filters");
const status = byId("status");
const older = byId("older");
const rules = new RuleBook();
const names = new DeviceNames(); // of the devices the list shows, asked for as they appear
let table;
let query = { state: "", severity: [], device: "", mine: false };
let cursor = null;
let myName = ""; // "assigned to me" shows the alarms assigned to this user

const statesOf = (state) => STATES[state] ?? [state];

function fromAddress() {
  const params = new URLSearchParams(location.search);
  const state = params.get("state") ?? "";
  return {
    state: CHOICES.has(state) ? state : "", // "open" (the default) or anything else
    severity: params.getAll("severity"),
    device: params.get("device") ?? "",
    mine: params.get("mine") === "1",
  };
}

function toAddress(q) {
  const params = new URLSearchParams();
  if (q.state) params.set("state", q.state);
  for (const s of q.severity) params.append("severity", s);
  if (q.device) params.set("device", q.device);
  if (q.mine) params.set("mine", "1");
  const text = params.toString();
  history.replaceState(null, "", text ? `?${text}` : location.pathname);
}

function readForm() {
  const data = new FormData(form);
  return {
    state: String(data.get("state") ?? ""),
    severity: data.getAll("severity").map(String),
    device: String(data.get("device") ?? "").trim(),
    mine: data.has("mine"),
  };
}

function writeForm(q) {
  form.elements.state.value = q.state;
  for (const box of form.querySelectorAll('input[name="severity"]')) {
    box.checked = q.severity.includes(box.value);
  }
  form.elements.device.value = q.device;
  form.elements.mine.checked = q.mine;
}

/**
 * Whether an alarm belongs in the current view (a live change may move it in or out). The
 * live feed's frame does not say the assignee (`assigneeKnown` false): the alarm read again
 * over REST decides.
 */
function matches(alarm, assigneeKnown = true) {
  const states = statesOf(query.state);
  if (states.length && !states.includes(alarm.state)) return false;
  if (query.severity.length && !query.severity.includes(alarm.severity)) return false;
  if (query.mine && assigneeKnown && alarm.assignee !== myName) return false;
  return !query.device || alarm.device_id === query.device;
}

async function loadPage(first) {
  const page = await api("/api/alarms", {
    query: {
      state: statesOf(query.state),
      severity: query.severity,
      device: query.device || null,
      assignee: query.mine ? "me" : null,
      cursor: first ? null : cursor,
      limit: PAGE,
    },
  });
  await names.learn(page.alarms.map((a) => a.device_id)); // one request for the new ones
  if (first) table.show(page.alarms);
  else for (const alarm of page.alarms) table.put(alarm);
  cursor = page.next_cursor;
  older.hidden = !cursor;
}

async function apply() {
  query = readForm();
  toAddress(query);
  say(status, "");
  try {
    await loadPage(true);
  } catch (error) {
    showError(status, error);
  }
}

async function onAlarm(message) {
  const { id, rule_id: ruleId } = message.alarm;
  if (!table.has(id) && !matches({ ...message.alarm, device_id: message.device }, false)) return;
  await rules.know(ruleId);
  let alarm;
  try {
    alarm = await api(`/api/alarms/${id}`);
  } catch (error) {
    if (error.status === 404) return table.drop(id); // moved out of the user's sites
    throw error;
  }
  // One whose details are open stays (what just happened to it), until the view is read again.
  if (matches(alarm) || table.entries.get(id)?.detail) {
    await names.learn([alarm.device_id]);
    table.put(alarm, { fresh: !table.has(id) });
  } else table.drop(id);
}

async function main() {
  const { me, live } = await startPage("alarms");
  myName = me.user.name;
  maintenanceBanner(); // this page needs alarms:read anyway
  table = new AlarmTable(byId("alarm-rows"), {
    rules,
    canWrite: me.can(Permission.ALARMS_WRITE),
    deviceName: (id) => names.name(id),
    onChange: () => {
      byId("no-alarms").hidden = table.size > 0;
    },
  });
  query = fromAddress();
  writeForm(query);
  new DevicePicker(form.elements.device);
  form.addEventListener("change", apply);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    apply();
  });
  older.addEventListener("click", () => loadPage(false).catch((error) => showError(status, error)));
  live
    .on("alarm", (message) => onAlarm(message).catch((error) => showError(status, error)))
    .on("resync", () => loadPage(true).catch((error) => showError(status, error)))
    .subscribe({ all: true, topics: ["alarm"] })
    .start();
  await rules.load();
  await loadPage(true);
}

main().catch((error) => showError(status, error));
