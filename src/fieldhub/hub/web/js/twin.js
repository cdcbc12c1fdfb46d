// The device twin: desired and reported state side by side, the difference, in sync or not
// (docs/twin.md). The action catalog is left out: the command buttons show it.

import { h, replace } from "./dom.js";
import { ago, dateTime, value } from "./format.js";

const HIDDEN = new Set(["actions"]);

/** Render `twin` (GET /api/devices/{id}/state) into `root`. */
export function renderTwin(root, twin) {
  const desired = twin.desired ?? {};
  const reported = twin.reported ?? {};
  const delta = twin.delta ?? {};
  const keys = [...new Set([...Object.keys(desired), ...Object.keys(reported)])]
    .filter((key) => !HIDDEN.has(key))
    .sort();
  const rows = keys.map((key) =>
    h(
      "tr",
      { class: key in delta ? "differs" : "", dataset: { key } },
      h("th", { scope: "row", text: key }),
      h("td", { "data-label": "desired", text: key in desired ? value(desired[key]) : "" }),
      h("td", { "data-label": "reported", text: key in reported ? value(reported[key]) : "—" }),
    ),
  );
  const syncText = twin.in_sync ? "in sync" : `out of sync: ${Object.keys(delta).join(", ") || "waiting for the device"}`;
  replace(
    root,
    h(
      "p",
      { class: "twin-head" },
      h("span", { class: `badge ${twin.in_sync ? "ok" : "warning"}`, text: syncText }),
      h("span", {
        class: "muted",
        text:
          ` desired version ${twin.version}` +
          (twin.desired_at ? `, set ${ago(twin.desired_at)} by ${twin.desired_by}` : "") +
          (twin.reported_ts ? ` · reported ${dateTime(twin.reported_ts)}` : ""),
      }),
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
