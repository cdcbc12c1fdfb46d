// Who has an alarm: a select of the users it may be given to (GET /api/alarms/{id}/assignable
// answers their names only: the hub decides who sees the alarm's device), "nobody" first.

import { api } from "./api.js";
import { h, replace } from "./dom.js";
import { showError } from "./session.js";

/**
 * The "Assign to" select of an open alarm, its options filled once the hub answers; the
 * current assignee chosen. A failure to list the users is said in `status`.
 * @returns {HTMLSelectElement}
 */
export function assigneeSelect(alarm, status) {
  const current = alarm.assignee ?? "";
  const select = h(
    "select",
    { name: "assignee" },
    h("option", { value: "", text: "nobody" }),
    current ? h("option", { value: current, text: current, selected: true }) : null,
  );
  api(`/api/alarms/${alarm.id}/assignable`)
    .then((names) => {
      const all = new Set(names);
      if (current) all.add(current); // still shown when no longer assignable
      replace(
        select,
        h("option", { value: "", text: "nobody" }),
        [...all].sort().map((name) => h("option", { value: name, text: name })),
      );
      select.value = current;
    })
    .catch((error) => showError(status, error));
  return select;
}
