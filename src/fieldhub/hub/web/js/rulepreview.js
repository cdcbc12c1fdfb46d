// A rule's preview (POST /api/alarm-rules/preview): the alarms it would have raised over the
// stored history of the user's devices, with the replay's notes and whether a bound cut it
// short, shown before the rule is saved.

import { h, replace } from "./dom.js";
import { dateTime, value } from "./format.js";

/** "1 alarm", "2 alarms". */
const count = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

/** Show a preview answer in `el`; `deviceName(id)` names devices. */
export function showPreview(el, answer, deviceName) {
  const summary =
    `Over ${answer.rows} stored values or events of ${count(answer.devices, "device")} since ` +
    `${dateTime(answer.since)}: ${count(answer.raised, "alarm")} would have been raised, ${answer.open} still open.`;
  replace(
    el,
    h("h3", { text: "Preview" }),
    h("p", { class: "note preview-summary", text: summary }),
    answer.cut ? h("p", { class: "msg preview-cut", text: `Cut short by the ${answer.cut} bound at ${dateTime(answer.until)}.` }) : null,
    answer.notes.length ? h("ul", { class: "preview-notes" }, answer.notes.map((n) => h("li", { text: n }))) : null,
    answer.alarms.length
      ? h(
          "table",
          { class: "preview cards" },
          h("thead", {}, h("tr", {}, ["Device", "Raised", "Cleared", "Value", "Message"].map((t) => h("th", { text: t })))),
          h(
            "tbody",
            {},
            answer.alarms.map((a) =>
              h(
                "tr",
                { class: "preview-alarm" },
                h("td", { "data-label": "Device", text: deviceName(a.device_id) }),
                h("td", { "data-label": "Raised", text: dateTime(a.raised_at) }),
                h("td", { "data-label": "Cleared", text: a.cleared_at === null ? "open" : dateTime(a.cleared_at) }),
                h("td", { "data-label": "Value", text: value(a.value) }),
                h("td", { "data-label": "Message", text: a.message || "—" }),
              ),
            ),
          ),
        )
      : h("p", { class: "empty", text: "It would have raised no alarm." }),
  );
}
