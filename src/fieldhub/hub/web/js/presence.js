// A device's presence as a badge with since-when, the same on every page.

import { showAge } from "./ages.js";
import { h } from "./dom.js";
import { ago, dateTime } from "./format.js";

/** `online · 5 min` badge; its title says since when exactly and why. */
export function presenceBadge(presence) {
  const state = presence?.state ?? "unknown";
  const badge = h("span", { class: `badge presence ${state}`, dataset: { presence: state } });
  fillPresence(badge, presence);
  return badge;
}

/** Update a badge made by `presenceBadge`; its since-when stays current by itself (ages.js). */
export function fillPresence(badge, presence) {
  const state = presence?.state ?? "unknown";
  badge.className = `badge presence ${state}`;
  badge.dataset.presence = state;
  showAge(badge, presence?.since ?? null, (since, now) =>
    since ? `${state} · ${ago(since, now).replace(" ago", "")}` : state,
  );
  const why = presence?.reason ? ` (${presence.reason})` : "";
  badge.title = presence?.since ? `${state} since ${dateTime(presence.since)}${why}` : state;
}
