// The alarm rule form: its fields written from a stored rule (GET /api/alarm-rules/{id}) and
// read back into the body POST/PUT /api/alarm-rules and the preview take. Fields are named by
// where they sit in that body ("condition.clear"), so a 422's `loc` finds its field
// (fielderrors.js). Only the fields of the chosen condition kind and target are shown and
// sent; an empty field is left out, and the hub's defaults apply (docs/alarms.md).

import { ApiError } from "./api.js";
import { h, replace } from "./dom.js";

const COUNT_OF = { threshold: "of", event: "within_s" };

/** A 422 of the page's own, shaped as the hub's, for what cannot even be sent. */
function invalid(loc, msg) {
  return new ApiError(422, msg, { detail: [{ loc: ["body", ...loc], msg, type: "value_error" }] });
}

/** "a, b" → ["a", "b"] (empty items dropped). */
const listOf = (text) =>
  text
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);

/** "site=berlin, group=atm" → {site: "berlin", group: "atm"}; throws on an item without "=". */
function labelsOf(text) {
  const labels = {};
  for (const item of listOf(text)) {
    const at = item.indexOf("=");
    if (at < 1) throw invalid(["target", "labels"], `"${item}": write labels as key=value`);
    labels[item.slice(0, at).trim()] = item.slice(at + 1).trim();
  }
  return labels;
}

/** A state value as typed: a number or true/false when it reads as one, else the text. */
function typedValue(text) {
  if (/^(true|false|-?\d+(\.\d+)?)$/.test(text)) return JSON.parse(text);
  return text;
}

export class RuleForm {
  /** @param {HTMLFormElement} form the page's #rule-form */
  constructor(form) {
    this.form = form;
    this.editing = null; // the id of the rule being edited, null for a new one
    const show = () => this.showFields();
    this.field("condition.kind").addEventListener("change", show);
    this.field("target.kind").addEventListener("change", show);
    this.showFields();
  }

  field(name) {
    return this.form.elements.namedItem(name);
  }

  text(name) {
    return String(this.field(name).value ?? "").trim();
  }

  number(name) {
    const text = this.text(name);
    return text === "" ? undefined : Number(text);
  }

  /** Show the fields of the chosen condition kind and target, hide the others. */
  showFields() {
    const kind = this.text("condition.kind");
    const target = this.text("target.kind");
    for (const el of this.form.querySelectorAll("[data-kinds]")) {
      el.hidden = !el.dataset.kinds.split(" ").includes(kind);
    }
    for (const el of this.form.querySelectorAll("[data-targets]")) {
      el.hidden = el.dataset.targets !== target;
    }
  }

  /** The escalation policies a rule may name (GET /api/escalation-policies). */
  setPolicies(policies) {
    const select = this.field("escalation");
    const chosen = select.value;
    replace(
      select,
      h("option", { value: "", text: "none" }),
      policies.map((p) => h("option", { value: p.id, text: p.name ? `${p.name} (${p.id})` : p.id })),
    );
    select.value = chosen;
  }

  /** Empty the form for a new rule. */
  clear() {
    this.form.reset();
    this.editing = null;
    this.field("id").disabled = false;
    this.showFields();
  }

  /** Write a stored rule into the form, to edit it. */
  fill(rule) {
    this.clear();
    this.editing = rule.id;
    const set = (name, value) => {
      this.field(name).value = value === null || value === undefined ? "" : String(value);
    };
    set("id", rule.id);
    this.field("id").disabled = true; // a rule's id is its name in alarms and the API
    set("name", rule.name);
    set("severity", rule.severity);
    this.field("enabled").checked = rule.enabled;
    const c = rule.condition;
    for (const key of ["kind", "key", "direction", "raise", "clear", "match", "presence", "seconds"]) {
      if (key in c) set(`condition.${key}`, c[key]);
    }
    if ("equals" in c) set("condition.equals", typeof c.equals === "string" ? c.equals : JSON.stringify(c.equals));
    for (const key of ["n", "of", "within_s"]) set(`condition.count.${key}`, c.count?.[key]);
    const t = rule.target;
    set("target.kind", t.devices ? "devices" : t.labels ? "labels" : "all");
    set("target.devices", (t.devices ?? []).join(", "));
    set("target.labels", Object.entries(t.labels ?? {}).map(([k, v]) => `${k}=${v}`).join(", "));
    set("for_s", rule.for_s);
    set("keep_firing_for_s", rule.keep_firing_for_s);
    set("clearable_by_user", rule.clearable_by_user);
    set("auto_clear_s", rule.auto_clear_s);
    set("escalation", rule.escalation);
    set("flapping.changes", rule.flapping?.changes);
    set("flapping.window_s", rule.flapping?.window_s);
    this.showFields();
  }

  /** The rule's body as the API takes it; throws a 422 of its own for unreadable labels. */
  read() {
    const kind = this.text("condition.kind");
    const condition = { kind };
    const put = (into, key, value) => {
      if (value !== undefined && value !== "") into[key] = value;
    };
    if (kind === "threshold") {
      put(condition, "key", this.text("condition.key"));
      put(condition, "direction", this.text("condition.direction"));
      put(condition, "raise", this.number("condition.raise"));
      put(condition, "clear", this.number("condition.clear"));
    } else if (kind === "event") {
      put(condition, "match", this.text("condition.match"));
    } else if (kind === "presence") {
      put(condition, "presence", this.text("condition.presence"));
    } else if (kind === "state") {
      put(condition, "key", this.text("condition.key"));
      const equals = this.text("condition.equals");
      put(condition, "equals", equals === "" ? undefined : typedValue(equals));
    } else if (kind === "absence") {
      put(condition, "key", this.text("condition.key"));
      put(condition, "seconds", this.number("condition.seconds"));
    }
    const n = this.number("condition.count.n");
    if (n !== undefined && COUNT_OF[kind]) {
      const count = { n };
      put(count, COUNT_OF[kind], this.number(`condition.count.${COUNT_OF[kind]}`));
      condition.count = count;
    }
    const body = {
      severity: this.text("severity"),
      enabled: this.field("enabled").checked,
      condition,
      target: this.target(),
    };
    if (!this.editing) put(body, "id", this.text("id"));
    put(body, "name", this.text("name"));
    for (const key of ["for_s", "keep_firing_for_s", "auto_clear_s"]) put(body, key, this.number(key));
    const clearable = this.text("clearable_by_user");
    if (clearable) body.clearable_by_user = clearable === "true";
    put(body, "escalation", this.text("escalation"));
    const changes = this.number("flapping.changes");
    const windowS = this.number("flapping.window_s");
    if (changes !== undefined || windowS !== undefined) {
      body.flapping = {};
      put(body.flapping, "changes", changes);
      put(body.flapping, "window_s", windowS);
    }
    return body;
  }

  target() {
    const kind = this.text("target.kind");
    if (kind === "devices") return { devices: listOf(this.text("target.devices")) };
    if (kind === "labels") return { labels: labelsOf(this.text("target.labels")) };
    return { all: true };
  }
}
