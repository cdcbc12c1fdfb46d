// What a device runs: its agent version and installed bundles (the `software` it reports,
// docs/rollouts.md), on the device page. Which devices run a bundle below a version is the
// hub's to say (GET /api/devices?bundle=&below=, the rule a rollout's `below` target uses too):
// the fleet page asks it, and never compares versions itself, so "1.10" > "1.9" has one home.

import { h } from "./dom.js";

/** The parts of a software line: `agent 0.1.0`, then `hello 1.0.0` per bundle ("on trial"
 * while a new version has not confirmed yet). `software`: as the device reports it. */
export function softwareParts(software) {
  if (!software) return [h("span", { class: "muted", text: "software not reported yet" })];
  const trial = software.trial ?? {};
  const part = (name, version, data) =>
    h("span", { class: "kv", dataset: data }, h("span", { class: "k", text: name }), h("span", { class: "v", text: version }));
  const bundles = Object.entries(software.bundles ?? {}).sort(([a], [b]) => a.localeCompare(b));
  return [
    part("agent", software.agent_version, { agent: "" }),
    bundles.length
      ? bundles.map(([name, version]) =>
          part(name, trial[name] ? `${trial[name]} (on trial)` : version, { bundle: name }),
        )
      : h("span", { class: "muted", text: "no bundles" }),
  ];
}
