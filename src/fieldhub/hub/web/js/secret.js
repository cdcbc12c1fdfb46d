// Secrets shown once (device credentials, API tokens): readable fields with copy buttons, and
// a plain statement that they will not be shown again.

import { h } from "./dom.js";

async function copy(input, button) {
  let done = false;
  try {
    await navigator.clipboard.writeText(input.value);
    done = true;
  } catch {
    // Not a secure context (plain http to another host), or no permission: select instead.
    input.select();
    done = document.execCommand?.("copy") ?? false;
  }
  button.textContent = done ? "Copied" : "Select and copy";
  setTimeout(() => {
    button.textContent = "Copy";
  }, 2000);
}

/**
 * A box with `fields` ([label, value]) to copy, a note, and a button that removes it.
 *
 * @param {string} title
 * @param {Array<[string, string]>} fields
 * @param {string} note
 */
export function shownOnce(title, fields, note) {
  const box = h(
    "div",
    { class: "once", role: "alert" },
    h("h3", { text: title }),
    h("p", { class: "warn", text: "Shown only now: the hub keeps no copy. Store it before leaving this page." }),
    fields.map(([label, text]) => {
      const input = h("input", { type: "text", readOnly: true, value: text, spellcheck: "false" });
      input.setAttribute("aria-label", label);
      const button = h("button", { type: "button", class: "quiet", text: "Copy" });
      button.addEventListener("click", () => copy(input, button));
      return h("div", { class: "secret-field", dataset: { field: label } }, h("span", { class: "k", text: label }), input, button);
    }),
    note ? h("p", { class: "note", text: note }) : null,
  );
  box.append(
    h("button", { type: "button", text: "I have stored it", onclick: () => box.remove() }),
  );
  return box;
}
