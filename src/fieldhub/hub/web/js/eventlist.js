// Event rows, the same on the device page and in the event log.

import { deviceHref, h } from "./dom.js";
import { dateTime, shortTime } from "./format.js";

/** A table row for one event (an item of GET /api/events, or of a live "event" message). */
export function eventRow(event, { device = true, fresh = false } = {}) {
  const data = event.data && Object.keys(event.data).length ? JSON.stringify(event.data) : "";
  return h(
    "tr",
    { class: fresh ? "event flash" : "event", dataset: { event: String(event.id), severity: event.severity } },
    h("td", { class: "when", "data-label": "Time", title: dateTime(event.ts), text: shortTime(event.ts) }),
    device
      ? h("td", { class: "device", "data-label": "Device" }, h("a", { href: deviceHref(event.device_id), text: event.device_id }))
      : null,
    h("td", { class: "type", "data-label": "Type", text: event.type }),
    h("td", { "data-label": "Severity" }, h("span", { class: `chip ${event.severity}`, text: event.severity })),
    h("td", { class: "message", "data-label": "Message" }, event.message, data ? h("span", { class: "data", text: data }) : null),
  );
}

/** Whether a type matches a filter: exact, or a family "door.*". */
export function typeMatches(type, pattern) {
  if (!pattern) return true;
  return pattern.endsWith(".*") ? type.startsWith(pattern.slice(0, -1)) : type === pattern;
}
