// A device's presence as a badge with since-when, the same on every page.

import { h } from "./dom.js";
import { ago, dateTime } from "./format.js";

/** `online · 5 min` badge; its title says since when exactly and why. */
export function presenceBadge(presence) {
  const state = presence?.state ?? "unknown";
  const badge = h("span", { class: `badge presence ${state}`, dataset: { presence: state } });
  fillPresence(badge, presence);
  return badge;
}

/** Update a badge made by `presenceBadge` (also used every few seconds for "since"). */
export function fillPresence(badge, presence, now = Date.now()) {
  const state = presence?.state ?? "unknown";
  badge.className = `badge presence ${state}`;
  badge.dataset.presence = state;
  badge.dataset.since = presence?.since ?? "";
  const since = presence?.since ? ` · ${ago(presence.since, now).replace(" ago", "")}` : "";
  badge.textContent = `${state}${since}`;
  const why = presence?.reason ? ` (${presence.reason})` : "";
  badge.title = presence?.since ? `${state} since ${dateTime(presence.since)}${why}` : state;
}

/** Refresh the since-when of every presence badge on the page. */
export function tickPresence(root = document) {
  const now = Date.now();
  for (const badge of root.querySelectorAll(".badge.presence[data-since]")) {
    const since = Number(badge.dataset.since);
    if (!since) continue;
    const state = badge.dataset.presence;
    badge.textContent = `${state} · ${ago(since, now).replace(" ago", "")}`;
  }
}
