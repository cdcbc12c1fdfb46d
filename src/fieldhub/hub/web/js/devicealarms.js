// A device's open alarms on its page, with the same rows and actions as the alarms page;
// kept current by the live feed (the device page already listens to its device).

import { AlarmTable, isOpen, RuleBook } from "./alarmlist.js";
import { api } from "./api.js";
import { byId } from "./dom.js";
import { showError } from "./session.js";

const OPEN_STATES = ["active", "acknowledged"];

/**
 * Show the open alarms of `deviceId` in the page's #alarms-section, and keep them current.
 *
 * @param {{deviceId: string, canWrite: boolean, live: import("./live.js").LiveFeed}} options
 * @returns {{load: () => Promise<void>, hide: () => void}} `load` reads them again (after a
 *   reconnection); `hide` for good (no such device)
 */
export function deviceAlarms({ deviceId, canWrite, live }) {
  const section = byId("alarms-section");
  const status = byId("status");
  const rules = new RuleBook();
  const table = new AlarmTable(byId("alarm-rows"), {
    rules,
    canWrite,
    device: false,
    onChange: () => {
      byId("no-alarms").hidden = table.size > 0;
    },
  });
  let hidden = false;
  byId("all-alarms").href = `/alarms?state=any&device=${encodeURIComponent(deviceId)}`;

  async function load() {
    await rules.load();
    const page = await api("/api/alarms", {
      query: { device: deviceId, state: OPEN_STATES, limit: 1000 },
    });
    table.show(page.alarms);
    section.hidden = hidden;
  }

  function hide() {
    hidden = true;
    section.hidden = true;
  }

  async function onAlarm(message) {
    if (message.device !== deviceId) return;
    await rules.know(message.alarm.rule_id);
    const alarm = await api(`/api/alarms/${message.alarm.id}`);
    // A cleared alarm stays in view while its details are open (what just happened to it).
    if (isOpen(alarm) || table.entries.get(alarm.id)?.detail) {
      table.put(alarm, { fresh: !table.has(alarm.id) });
    } else {
      table.drop(alarm.id);
    }
  }

  live.on("alarm", (message) => onAlarm(message).catch((error) => showError(status, error)));
  return { load, hide };
}
