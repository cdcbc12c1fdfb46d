// The maintenance banner: while a maintenance window covering what the page shows is open
// (GET /api/maintenance-windows?active=true, scoped by the user's sites; on a device page
// only the windows covering that device), a line at the top of the page names it and says
// when it ends. Alarms raised meanwhile are still shown; their notifications wait.

import { api } from "./api.js";
import { h, replace } from "./dom.js";
import { dateTime } from "./format.js";

const AGAIN_MS = 60_000; // windows are planned ahead: a minute is soon enough
const MAX_WAIT_MS = 2 ** 31 - 1; // what setTimeout can wait
const SHOWN = 3; // windows named; more are counted

/**
 * Show the banner at the top of the page's <main>, kept current.
 * @param {string | null} deviceId only the windows covering this device (a device page)
 */
export function maintenanceBanner(deviceId = null) {
  const banner = h("p", { class: "banner maintenance", id: "maintenance", role: "status" });
  banner.hidden = true;
  document.querySelector("main")?.prepend(banner);
  const query = new URLSearchParams({ active: "true" });
  if (deviceId) query.set("device", deviceId);
  let timer = 0;

  async function load() {
    clearTimeout(timer);
    let wait = AGAIN_MS;
    try {
      const open = await api(`/api/maintenance-windows?${query}`);
      show(banner, open);
      for (const window of open) wait = Math.min(wait, window.active_until - Date.now() + 500);
    } catch (error) {
      console.error(error); // the page works without its banner
    }
    timer = setTimeout(load, Math.max(1000, Math.min(wait, MAX_WAIT_MS)));
  }

  load();
}

function show(banner, open) {
  banner.hidden = open.length === 0;
  if (!open.length) return;
  const named = open.slice(0, SHOWN).map((w, i) => [
    i ? "; " : "",
    h("strong", { text: w.name }),
    ` until ${dateTime(w.active_until)}`,
  ]);
  const more = open.length > SHOWN ? ` and ${open.length - SHOWN} more` : "";
  replace(banner, "Maintenance: ", named, more, ". Alarms are raised; notifications wait.");
}
