// The device twin: desired and reported state side by side, the difference, in sync or not
// (docs/twin.md). The protocol's own keys are left out (reported.js): the command buttons show
// the action catalog, the head says in sync or not, and a refused key's row says why.

import { showAge } from "./ages.js";
import { h, replace } from "./dom.js";
import { dateTime, value } from "./format.js";
import { DESIRED_ERRORS, isReserved } from "./reported.js";

/** Render `twin` (GET /api/devices/{id}/state) into `root`. */
export function renderTwin(root, twin) {
  const desired = twin.desired ?? {};
  const reported = twin.reported ?? {};
  const delta = twin.delta ?? {};
  const refused = reported[DESIRED_ERRORS] ?? {};
  const keys = [...new Set([...Object.keys(desired), ...Object.keys(reported)])]
    .filter((key) => !isReserved(key))
    .sort();
  const shown = (key) => {
    if (key in reported) return value(reported[key]);
    return key in refused ? `refused: ${value(refused[key])}` : "—";
  };
  const rows = keys.map((key) =>
    h(
      "tr",
      { class: key in delta ? "differs" : "", dataset: { key } },
      h("th", { scope: "row", text: key }),
      h("td", { "data-label": "desired", text: key in desired ? value(desired[key]) : "" }),
      h("td", { "data-label": "reported", text: shown(key) }),
    ),
  );
  const syncText = twin.in_sync ? "in sync" : `out of sync: ${Object.keys(delta).join(", ") || "waiting for the device"}`;
  replace(
    root,
    h(
      "p",
      { class: "twin-head" },
      h("span", { class: `badge ${twin.in_sync ? "ok" : "warning"}`, text: syncText }),
      h(
        "span",
        { class: "muted" },
        ` desired version ${twin.version}`,
        twin.desired_at
          ? [", set ", showAge(h("span", { title: dateTime(twin.desired_at) }), twin.desired_at), ` by ${twin.desired_by}`]
          : null,
        twin.reported_ts ? ` · reported ${dateTime(twin.reported_ts)}` : null,
      ),
    ),
    keys.length
      ? h(
          "table",
          { class: "twin" },
          h("thead", {}, h("tr", {}, h("th", { text: "key" }), h("th", { text: "desired" }), h("th", { text: "reported" }))),
          h("tbody", {}, rows),
        )
      : h("p", { class: "muted", text: "Nothing reported yet." }),
  );
}
