// The open alarms counted (GET /api/alarms/summary): the number in the navigation on every
// page, and per device for the fleet. One request however large the fleet; asked again a
// moment after the live feed says an alarm changed (several changes, one request), and after
// every reconnection.

import { api } from "./api.js";

const AGAIN_MS = 300; // changes of one commit come together: count once after them
const MAX_WAIT_MS = 2 ** 31 - 1; // what setTimeout can wait
const LOUD = new Set(["critical", "major"]); // highlighted in the navigation

/** The highest severity first: how severities compare on every page. */
export const SEVERITIES = ["critical", "major", "minor", "warning", "info"];

export class AlarmCounts {
  /**
   * @param {boolean} allowed whether the user may read alarms (else nothing is asked)
   * @param {import("./live.js").LiveFeed} live the page's feed (started by the page)
   */
  constructor(allowed, live) {
    this.allowed = allowed;
    this.summary = { open: 0, shelved: 0, by_severity: {}, devices: {} };
    this.listeners = [];
    this.timer = 0;
    this.unshelve = 0;
    this.loaded = !allowed; // nothing to wait for
    const link = document.querySelector('[data-nav="alarms"]');
    this.badge = document.getElementById("alarm-count");
    if (!allowed) {
      if (link) link.hidden = true;
      return;
    }
    live
      .on("alarm", () => this.soon())
      .on("resync", () => this.soon())
      .subscribe({ all: true, topics: ["alarm"] });
    this.load();
  }

  /** Call `listener(summary)` now (when counted) and after every new count. */
  on(listener) {
    this.listeners.push(listener);
    if (this.loaded) listener(this.summary);
    return this;
  }

  /** A device's open alarms: `{open, severity, shelved}` (zeros when it has none). */
  device(deviceId) {
    return this.summary.devices[deviceId] ?? { open: 0, severity: null, shelved: 0 };
  }

  soon() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.load(), AGAIN_MS);
  }

  async load() {
    if (!this.allowed) return;
    try {
      this.summary = await api("/api/alarms/summary");
    } catch (error) {
      console.warn("alarm counts:", error.message);
      return;
    }
    this.loaded = true;
    // A shelving that ends changes the counts without any alarm changing: count again then.
    clearTimeout(this.unshelve);
    const until = this.summary.shelved_until;
    if (until !== null && until !== undefined) {
      this.unshelve = setTimeout(() => this.load(), Math.min(Math.max(until - Date.now(), 0) + 100, MAX_WAIT_MS));
    }
    this.show();
    for (const listener of this.listeners) listener(this.summary);
  }

  show() {
    if (!this.badge) return;
    const { open, by_severity: bySeverity, shelved } = this.summary;
    const top = SEVERITIES.find((s) => bySeverity[s]) ?? "";
    this.badge.hidden = open === 0;
    this.badge.textContent = String(open);
    this.badge.dataset.severity = top;
    this.badge.classList.toggle("loud", LOUD.has(top));
    const parts = SEVERITIES.filter((s) => bySeverity[s]).map((s) => `${bySeverity[s]} ${s}`);
    if (shelved) parts.push(`${shelved} shelved`);
    this.badge.title = `${open} open ${open === 1 ? "alarm" : "alarms"}${parts.length ? `: ${parts.join(", ")}` : ""}`;
  }
}
