// A 422 shown where it belongs: each error of the hub's list (`{loc, msg}`) next to the form
// field its `loc` names ("body" dropped, the rest joined by dots: ["body", "condition",
// "clear"] is the field named "condition.clear"), or, when no field has that name, in the
// form's status line with its location. Other failures go to the status line as they are.

import { ApiError } from "./api.js";
import { h, say } from "./dom.js";
import { showError } from "./session.js";

/** The dotted field name a 422's `loc` points at ("" for the request as a whole). */
export const fieldOf = (loc) =>
  (Array.isArray(loc) ? loc : []).filter((part, i) => !(i === 0 && part === "body")).join(".");

/** Remove the messages a previous answer left next to fields. */
export function clearFieldErrors(form) {
  for (const note of form.querySelectorAll(".field-error")) note.remove();
  for (const field of form.querySelectorAll("[aria-invalid]")) field.removeAttribute("aria-invalid");
}

/**
 * Show `error` on `form`: a 422's errors at their fields (the longest prefix of the dotted
 * path that names a field: ["body", "target", "labels", "site"] lands on "target.labels"),
 * anything else in `status`.
 * @param {(name: string) => string} [alias] maps a field path to the form's name for it
 */
export function showFieldErrors(form, status, error, alias = (name) => name) {
  clearFieldErrors(form);
  const errors = error instanceof ApiError && error.status === 422 ? error.body?.detail : null;
  if (!Array.isArray(errors)) {
    showError(status, error);
    return;
  }
  const unplaced = [];
  for (const item of errors) {
    const field = fieldFor(form, alias(fieldOf(item.loc)));
    if (!field) {
      const where = fieldOf(item.loc);
      unplaced.push(where ? `${where}: ${item.msg}` : String(item.msg));
      continue;
    }
    field.setAttribute("aria-invalid", "true");
    const label = field.closest("label") ?? field;
    label.append(h("span", { class: "field-error", role: "alert", text: String(item.msg) }));
  }
  if (unplaced.length) say(status, unplaced.join("; "), "error");
  else say(status, "Please correct the fields marked.", "error");
}

function fieldFor(form, path) {
  const parts = path.split(".");
  for (let n = parts.length; n > 0; n -= 1) {
    const field = form.elements.namedItem(parts.slice(0, n).join("."));
    if (field instanceof RadioNodeList) return field[0]?.closest("fieldset") ?? null; // checkboxes
    if (field) return field;
  }
  return null;
}
