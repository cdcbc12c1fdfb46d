// How times, durations and values read on the pages.

const UNITS = [
  [86_400_000, "d"],
  [3_600_000, "h"],
  [60_000, "min"],
  [1000, "s"],
];

/** "42 s", "5 min", "3 h", "2 d": the largest unit, rounded down. */
export function duration(ms) {
  const abs = Math.max(0, ms);
  for (const [size, unit] of UNITS) {
    if (abs >= size) return `${Math.floor(abs / size)} ${unit}`;
  }
  return "0 s";
}

/** "just now", "12 s ago", "5 min ago" (relative to `now`, default the clock). */
export function ago(ts, now = Date.now()) {
  if (ts === null || ts === undefined) return "never";
  const ms = now - ts;
  if (ms < 5000) return "just now";
  return `${duration(ms)} ago`;
}

const pad = (n) => String(n).padStart(2, "0");

/** Local date and time, "2026-11-21 18:35:13". */
export function dateTime(ts) {
  if (ts === null || ts === undefined) return "—";
  const d = new Date(ts);
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
  );
}

/** Local time only when today, else date and time. */
export function shortTime(ts, now = Date.now()) {
  if (ts === null || ts === undefined) return "—";
  const full = dateTime(ts);
  return full.slice(0, 10) === dateTime(now).slice(0, 10) ? full.slice(11) : full;
}

/** A telemetry or state value as text: numbers with at most 3 decimals, JSON for objects. */
export function value(v) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "number") {
    return Number.isInteger(v) ? String(v) : String(Math.round(v * 1000) / 1000);
  }
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

/** `datetime-local` input value ↔ epoch ms (local time). */
export function toInputTime(ts) {
  return ts === null || ts === undefined ? "" : dateTime(ts).replace(" ", "T");
}

export function fromInputTime(text) {
  if (!text) return null;
  const ms = new Date(text).getTime();
  return Number.isNaN(ms) ? null : ms;
}
