// The rules table: one row per rule the user sees (name, severity, what its condition says,
// which devices it targets, enabled), and for users who may write rules the row's actions:
// edit, enable or disable, delete (asked twice in the row itself: no browser dialog).

import { h, replace } from "./dom.js";
import { value } from "./format.js";

/** What a condition says, in a line: "temperature above 50 (clear 45), 3 of 5". */
export function conditionText(c) {
  let text;
  if (c.kind === "threshold") text = `${c.key} ${c.direction} ${value(c.raise)} (clear ${value(c.clear)})`;
  else if (c.kind === "event") text = `event ${c.match}`;
  else if (c.kind === "presence") text = `device ${c.presence}`;
  else if (c.kind === "state") text = `${c.key} = ${value(c.equals)}`;
  else if (c.kind === "absence") text = `no ${c.key} for ${c.seconds} s`;
  else text = String(c.kind);
  if (c.count?.of) text += `, ${c.count.n} of ${c.count.of}`;
  if (c.count?.within_s) text += `, ${c.count.n} within ${c.count.within_s} s`;
  return text;
}

/** Which devices a target reaches, in a line. */
export function targetText(t) {
  if (t.devices) return t.devices.join(", ");
  if (t.labels) return Object.entries(t.labels).map(([k, v]) => `${k}=${v}`).join(", ");
  return "every device";
}

/**
 * Show `rules` in `tbody`.
 * @param {{canWrite: boolean, edit: (rule) => void, enable: (rule, on: boolean) => void,
 *          remove: (rule) => void}} actions
 */
export function showRules(tbody, rules, actions) {
  replace(
    tbody,
    rules.map((rule) =>
      h(
        "tr",
        { class: `rule ${rule.enabled ? "" : "inactive"}`.trim(), dataset: { rule: rule.id } },
        h("td", { class: "name", "data-label": "Name" }, rule.name, h("span", { class: "id", text: ` ${rule.id}` })),
        h("td", { "data-label": "Severity" }, h("span", { class: `chip ${rule.severity}`, text: rule.severity })),
        h("td", { class: "condition", "data-label": "Condition", text: conditionText(rule.condition) }),
        h("td", { class: "target", "data-label": "Target", text: targetText(rule.target) }),
        h("td", { class: "enabled", "data-label": "Enabled", text: rule.enabled ? "yes" : "no" }),
        h("td", { class: "row-actions" }, actions.canWrite ? rowActions(rule, actions) : null),
      ),
    ),
  );
}

function rowActions(rule, actions) {
  const confirm = h("button", {
    type: "button",
    class: "danger",
    text: "Really delete",
    hidden: true,
    onclick: () => actions.remove(rule),
  });
  return [
    h("button", { type: "button", class: "quiet", text: "Edit", onclick: () => actions.edit(rule) }),
    h("button", {
      type: "button",
      class: "quiet",
      text: rule.enabled ? "Disable" : "Enable",
      onclick: () => actions.enable(rule, !rule.enabled),
    }),
    h("button", {
      type: "button",
      class: "quiet",
      text: "Delete",
      onclick: (event) => {
        event.currentTarget.hidden = true;
        confirm.hidden = false;
        confirm.focus();
      },
    }),
    confirm,
  ];
}
