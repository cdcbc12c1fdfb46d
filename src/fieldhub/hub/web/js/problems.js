// What is wrong with a device, as far as the API tells: presence, the twin, and reported
// states that units use for trouble.
//
// The hub has no alarms yet (they come later, shared DESIGN §7); until then a problem is
// derived here from what every device reports:
// - presence offline or stale;
// - the twin out of sync (desired keys not reported as desired) or desired keys refused;
// - a unit state word that means trouble: a socket check's "fault", a thermometer's "missing",
//   "low" or "high", a supply's "low"/"high" or its under-voltage flag.

import { DESIRED_ERRORS, unitStates } from "./reported.js";

const TROUBLE = new Map([
  ["fault", "critical"],
  ["missing", "warning"],
  ["low", "warning"],
  ["high", "warning"],
  ["error", "warning"],
]);

/**
 * The problems of a device, most serious first: `[{text, severity}]`.
 *
 * @param {object} device an item of GET /api/devices
 * @param {object|null} twin GET /api/devices/{id}/state, when known
 */
export function problemsOf(device, twin) {
  const found = [];
  const state = device.presence?.state;
  if (state === "offline") found.push({ text: "offline", severity: "critical" });
  else if (state === "stale") found.push({ text: "stale: no data lately", severity: "warning" });
  else if (state === "unreachable") found.push({ text: "unreachable: its gateway is away", severity: "warning" });
  if (twin) {
    const reported = twin.reported ?? {};
    for (const [key, value] of unitStates(reported)) {
      if (typeof value === "string" && TROUBLE.has(value)) {
        found.push({ text: `${key} ${value}`, severity: TROUBLE.get(value) });
      } else if (key.endsWith(".under_voltage") && value === true) {
        found.push({ text: `${key.slice(0, -".under_voltage".length)} under-voltage`, severity: "warning" });
      }
    }
    const refused = reported[DESIRED_ERRORS];
    if (refused && typeof refused === "object" && Object.keys(refused).length) {
      found.push({ text: `desired state refused: ${Object.keys(refused).join(", ")}`, severity: "warning" });
    }
    if (!twin.in_sync) {
      const keys = Object.keys(twin.delta ?? {});
      found.push({
        text: keys.length ? `twin out of sync: ${keys.join(", ")}` : "twin out of sync",
        severity: "info",
      });
    }
  }
  const rank = { critical: 0, warning: 1, info: 2 };
  return found.sort((a, b) => rank[a.severity] - rank[b.severity]);
}
