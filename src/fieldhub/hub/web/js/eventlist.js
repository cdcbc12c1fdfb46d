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
    h(
      "td",
      { class: "message", "data-label": "Message" },
      event.message,
      data ? h("span", { class: "data", text: data }) : null,
      event.media?.length ? h("span", { class: "media-list" }, event.media.map(mediaItem)) : null,
    ),
  );
}

/**
 * One object an event announced: its thumbnail (a link to the full picture), a download link
 * for other types, or "picture coming" while the device has not uploaded it yet.
 */
export function mediaItem(media) {
  const props = { class: `media ${media.state}`, dataset: { media: String(media.id) } };
  if (media.state !== "complete") {
    const what = media.type.startsWith("image/") ? "picture" : media.name;
    return h("span", { ...props, title: `${media.name}: on its way from the device`, text: `${what} coming…` });
  }
  const link = { ...props, href: media.url, target: "_blank", rel: "noopener", title: media.name };
  if (media.thumbnail) return h("a", link, h("img", { src: media.thumbnail, alt: media.name, loading: "lazy" }));
  return h("a", { ...link, text: `${media.name} (${Math.ceil(media.size / 1024)} KiB)` });
}

/** A live "media" message: the object arrived; its "coming" placeholder becomes the real one. */
export function mediaArrived(container, message) {
  const id = CSS.escape(String(message.media.id));
  for (const placeholder of container.querySelectorAll(`[data-media="${id}"]`)) {
    placeholder.replaceWith(mediaItem(message.media));
  }
}

/** Whether a type matches a filter: exact, or a family "door.*". */
export function typeMatches(type, pattern) {
  if (!pattern) return true;
  return pattern.endsWith(".*") ? type.startsWith(pattern.slice(0, -1)) : type === pattern;
}
