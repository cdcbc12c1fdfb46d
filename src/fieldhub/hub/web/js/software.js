// What a device runs: its agent version and installed bundles (the `software` it reports,
// docs/rollouts.md), on the device page; and the fleet page's filter by it.
//
// Which devices run a bundle below a version is the hub's to say (GET /api/devices?bundle=
// &below=, the rule a rollout's `below` target uses too): the page asks, and never compares
// versions itself, so "1.10" > "1.9" has one home.

import { api } from "./api.js";
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

/** The names of the bundles any of `devices` runs, for the filter's choice. */
export function bundleNames(devices) {
  const names = new Set();
  for (const device of devices) for (const name of Object.keys(device.software?.bundles ?? {})) names.add(name);
  return names;
}

/** The fleet page's software filter: the ids the hub says match, asked again when the
 * choice changes or a device reports other software. */
export class SoftwareFilter {
  #ids = null; // null: no filter
  #asked = "";

  /** Whether the device with `id` passes. */
  matches(id) {
    return this.#ids === null || this.#ids.has(id);
  }

  /** Ask the hub for the devices running `bundle` (below `below` when given: or not at
   * all); `again` asks even for the same choice. Resolves to whether the answer changed
   * the filter (false: the same choice, or a newer one came meanwhile and decides). */
  async choose(bundle, below, again = false) {
    const asked = bundle ? `${bundle}\n${below}` : "";
    if (asked === this.#asked && !again) return false;
    this.#asked = asked;
    if (!bundle) {
      this.#ids = null;
      return true;
    }
    const query = { bundle, limit: 10000 };
    if (below) query.below = below;
    const list = await api("/api/devices", { query });
    if (this.#asked !== asked) return false;
    this.#ids = new Set(list.map((device) => device.id));
    return true;
  }

  /** Whether a filter is chosen (a device's new software may change its answer). */
  get active() {
    return this.#asked !== "";
  }
}
