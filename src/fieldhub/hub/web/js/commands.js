// Command buttons of a device, made from the action catalog its agent reports (reported
// state key `actions`: name → {argument: int|float|bool|str}) and, from newer agents, its
// details (key `action_details`: name → {duration_s, args: {argument: {default, min, max,
// unit}}}): each argument's input says its type, default, range and unit, and refuses what
// is out of range before anything is sent. Then the outcome of each command as it arrives:
// queued → sent → acknowledged → succeeded | failed | timed_out | expired (docs/commands.md),
// with the arguments the device changed (`adjusted`).

import { api } from "./api.js";
import { h, replace, say } from "./dom.js";
import { shortTime } from "./format.js";
import { showError } from "./session.js";

const STAGE = { queued: 0, sent: 1, acknowledged: 2 }; // anything else is final (3)
const FOLLOW_MS = 1000;
const FOLLOW_LIVE_MS = 5000;
const FOLLOW_LIMIT_MS = 15 * 60_000; // a command for an offline device may wait long: stop asking

function stage(command) {
  return command.finished ? 3 : (STAGE[command.status] ?? 0);
}

function isNumber(value) {
  return typeof value === "number" && Number.isFinite(value);
}

/** What the device says of an argument, in words: "float · default 10 · 0.1–3600 s". */
function describeArg(kind, about) {
  const unit = typeof about.unit === "string" && about.unit ? ` ${about.unit}` : "";
  const parts = [kind];
  if ("default" in about) parts.push(`default ${about.default}${unit}`);
  if (isNumber(about.min) && isNumber(about.max)) parts.push(`${about.min}–${about.max}${unit}`);
  else if (isNumber(about.min)) parts.push(`≥ ${about.min}${unit}`);
  else if (isNumber(about.max)) parts.push(`≤ ${about.max}${unit}`);
  else if (unit) parts.push(unit.trim());
  return parts.join(" · ");
}

function argInput(action, name, kind, about) {
  const id = `arg-${action}-${name}`.replace(/[^A-Za-z0-9_-]/g, "_");
  const hasDefault = "default" in about;
  let input;
  if (kind === "bool") {
    input = h("input", { type: "checkbox", id, name, checked: about.default === true });
  } else if (kind === "int" || kind === "float") {
    input = h("input", {
      type: "number",
      id,
      name,
      required: !hasDefault,
      step: kind === "int" ? "1" : "any",
      inputmode: kind === "int" ? "numeric" : "decimal",
      min: isNumber(about.min) ? String(about.min) : undefined,
      max: isNumber(about.max) ? String(about.max) : undefined,
      placeholder: hasDefault ? String(about.default) : undefined,
    });
  } else {
    input = h("input", {
      type: "text",
      id,
      name,
      required: !hasDefault,
      autocomplete: "off",
      placeholder: hasDefault ? String(about.default) : undefined,
    });
  }
  input.dataset.kind = kind;
  const hint = h("small", { class: "hint", id: `${id}-hint`, text: describeArg(kind, about) });
  input.setAttribute("aria-describedby", hint.id);
  const label = h("label", { class: "arg", for: id }, `${name} `, input);
  return h("span", { class: "arg-field" }, label, hint);
}

/** The arguments of a form; an empty field whose argument has a default is left out (the
 * device's default applies, filled in by the hub). */
function readArgs(form) {
  const args = {};
  for (const input of form.querySelectorAll("input[data-kind]")) {
    const kind = input.dataset.kind;
    if (kind !== "bool" && input.value === "" && !input.required) continue;
    if (kind === "bool") args[input.name] = input.checked;
    else if (kind === "int") args[input.name] = Number.parseInt(input.value, 10);
    else if (kind === "float") args[input.name] = Number.parseFloat(input.value);
    else args[input.name] = input.value;
  }
  return args;
}

/** The details a device gave of an action's arguments: argument → {default, min, max, unit}. */
function argDetails(details, action) {
  const entry = details && typeof details === "object" ? details[action] : null;
  const args = entry && typeof entry === "object" ? entry.args : null;
  if (!args || typeof args !== "object") return {};
  const described = Object.entries(args).filter(([, about]) => about && typeof about === "object");
  return Object.fromEntries(described);
}

export class CommandPanel {
  /**
   * @param {HTMLElement} root where the buttons go
   * @param {HTMLElement} log the list of recent commands and their outcomes
   * @param {string} deviceId
   * @param {{allowed: boolean, role: string, isLive: () => boolean}} options
   */
  constructor(root, log, deviceId, options) {
    this.root = root;
    this.log = log;
    this.deviceId = deviceId;
    this.options = options;
    this.commands = new Map(); // id → {command, item}
    this.catalogText = "";
  }

  /** Build the buttons from the catalog and its details (again only when they changed). */
  setCatalog(catalog, details) {
    const text = JSON.stringify([catalog ?? null, details ?? null]);
    if (text === this.catalogText) return;
    this.catalogText = text;
    const actions = catalog && typeof catalog === "object" ? Object.keys(catalog).sort() : [];
    if (!actions.length) {
      replace(this.root, h("p", { class: "muted", text: "The device has not reported its actions." }));
      return;
    }
    if (!this.options.allowed) {
      replace(
        this.root,
        h("p", { class: "muted", text: `Your role (${this.options.role}) may not send commands.` }),
        h("p", { class: "muted", text: `Actions: ${actions.join(", ")}` }),
      );
      return;
    }
    const forms = actions.map((action) => {
      const spec = catalog[action] && typeof catalog[action] === "object" ? catalog[action] : {};
      const about = argDetails(details, action);
      const message = h("span", { class: "msg", hidden: true });
      const form = h(
        "form",
        { class: "action", dataset: { action } },
        Object.entries(spec).map(([name, kind]) =>
          argInput(action, name, String(kind), about[name] ?? {}),
        ),
        h("button", { type: "submit", text: action }),
        message,
      );
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        this.send(action, readArgs(form), form, message);
      });
      return form;
    });
    replace(this.root, forms);
  }

  async send(action, args, form, message) {
    const button = form.querySelector("button");
    button.disabled = true;
    say(message, "");
    try {
      const command = await api(`/api/devices/${encodeURIComponent(this.deviceId)}/commands`, {
        method: "POST",
        query: { wait: "false" },
        body: { action, args },
      });
      this.upsert(command);
      this.follow(command.id);
    } catch (error) {
      showError(message, error); // the hub's reason: 403 for the role, 422 for the arguments
    } finally {
      button.disabled = false;
    }
  }

  /** Ask the hub until the command finished: every second while the live feed is down, every
   * few seconds as a safety net while it is up (it brings every change by itself). */
  async follow(id) {
    const started = Date.now();
    let asked = started;
    while (!this.commands.get(id)?.command.finished && Date.now() - started < FOLLOW_LIMIT_MS) {
      await new Promise((resolve) => setTimeout(resolve, FOLLOW_MS));
      const every = this.options.isLive() ? FOLLOW_LIVE_MS : FOLLOW_MS;
      if (Date.now() - asked < every) continue;
      asked = Date.now();
      try {
        this.upsert(await api(`/api/commands/${encodeURIComponent(id)}`));
      } catch {
        return;
      }
    }
  }

  /** Show a command (new, or a later stage of one shown); earlier stages never overwrite. */
  upsert(command) {
    if (command.device_id !== this.deviceId) return;
    const known = this.commands.get(command.id);
    if (known && stage(known.command) > stage(command)) return;
    const item = this.item(command);
    if (known) known.item.replaceWith(item);
    else this.log.prepend(item);
    this.commands.set(command.id, { command, item });
    while (this.log.children.length > 20) {
      const last = this.log.lastElementChild;
      this.commands.delete(last.dataset.command);
      last.remove();
    }
  }

  item(command) {
    const args = Object.keys(command.args ?? {}).length ? ` ${JSON.stringify(command.args)}` : "";
    let outcome = "";
    if (command.status === "succeeded" && command.result !== null && command.result !== undefined) {
      outcome = JSON.stringify(command.result);
    } else if (command.error) {
      outcome = command.error;
    }
    const changed = Object.entries(command.adjusted ?? {}).map(
      ([name, change]) => `${name} ${change?.requested} → ${change?.used}: ${change?.why ?? ""}`,
    );
    return h(
      "li",
      { class: "command", dataset: { command: command.id, status: command.status } },
      h("span", { class: "when", text: shortTime(command.created_at) }),
      h("span", { class: "what", text: `${command.action}${args}` }),
      h("span", { class: `badge status ${command.status}`, text: command.status }),
      command.late ? h("span", { class: "chip info", text: "late" }) : null,
      outcome ? h("span", { class: "outcome", text: outcome }) : null,
      changed.length ? h("span", { class: "chip info adjusted", text: changed.join("; ") }) : null,
      h("span", { class: "by", text: command.created_by }),
    );
  }

  /** The device's latest commands from the API (after a load or a reconnection). */
  async loadRecent() {
    const recent = await api(`/api/devices/${encodeURIComponent(this.deviceId)}/commands`, {
      query: { limit: 10 },
    });
    for (const command of recent.reverse()) this.upsert(command);
  }
}
