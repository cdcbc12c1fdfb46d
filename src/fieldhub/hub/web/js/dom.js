// Building the page without ever parsing HTML: text goes in through textContent only.
//
// Device names, event messages, labels and state values come from devices, and devices are
// not trusted. Nothing from the API is ever put into innerHTML; attributes are set one by one
// by name, and the names are always this code's own.

/**
 * Make an element. `props`: `class`, `text`, `dataset` (object), `on<event>` handlers,
 * DOM properties for non-string values (`checked`, `disabled`, `hidden`), else attributes.
 * Children: nodes, strings (as text nodes), arrays of them, or null/false (skipped).
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = String(value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (typeof value !== "string" && key in el) el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

/** Append children (nodes, strings as text, arrays; null/undefined/false skipped). */
export function append(parent, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

/** Replace every child of `parent` with `children`. */
export function replace(parent, ...children) {
  parent.replaceChildren();
  return append(parent, children);
}

/** The element with this id (throws when a page lacks it: a bug, say so loudly). */
export function byId(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`page has no element #${id}`);
  return el;
}

/** A same-origin link to a device's page (ids are path-encoded, never interpreted). */
export function deviceHref(deviceId) {
  return `/devices/${encodeURIComponent(deviceId)}`;
}

/** Show a message in a status element: kind "error", "ok" or "" (plain). */
export function say(el, message, kind = "") {
  el.textContent = message;
  el.className = `msg ${kind}`.trim();
  el.hidden = !message;
}
