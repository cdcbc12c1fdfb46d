// Relative ages on the pages ("12 s ago", "online · 5 min"), kept current from one place.
//
// An age is true only when it is written; a page that wrote one when a value came would show it
// unchanged until the next value, so a tile said "just now" for minutes beside a header that
// said "1 min ago". Every age goes through `showAge`, which remembers the time it counts from,
// and one timer per page (`keepAgesCurrent`) writes them all again.

import { ago } from "./format.js";

const TICK_MS = 1000; // the finest unit shown is a second
const formats = new WeakMap(); // element → (ts, now) => its text

/**
 * Make `el` show how long ago `ts` was, now and from then on.
 *
 * @param {HTMLElement} el
 * @param {number|null} ts epoch ms; null shows `format(null, now)` ("never" by default)
 * @param {(ts: number|null, now: number) => string} format the words around the age
 */
export function showAge(el, ts, format = ago) {
  el.dataset.ago = ts ?? "";
  formats.set(el, format);
  writeAge(el, Date.now());
  return el;
}

function writeAge(el, now) {
  const format = formats.get(el) ?? ago;
  const ts = el.dataset.ago === "" ? null : Number(el.dataset.ago);
  const text = format(ts, now);
  if (el.textContent !== text) el.textContent = text;
}

/** Write every age under `root` again (the timer does; a page may too). */
export function refreshAges(root = document) {
  const now = Date.now();
  for (const el of root.querySelectorAll("[data-ago]")) writeAge(el, now);
}

/** Start the page's one timer that keeps its ages current. */
export function keepAgesCurrent() {
  return setInterval(() => refreshAges(), TICK_MS);
}
