// Alarm rows, the same on the alarms page and the device page: severity, device, rule,
// message, raised age and state; a row opens into its details (history and the actions:
// acknowledge with a comment, clear where the rule allows it, shelve until a time, assign to
// a user, add a comment).
//
// Open alarms come first, newest first within. What the page knows of a rule (its name,
// whether users may clear its alarms) decides what is shown; what the hub answers decides
// what happens: its refusal (a 403 with its reason, a 409) is shown as it is.

import { assigneeSelect } from "./alarmassign.js";
import { showAge } from "./ages.js";
import { api } from "./api.js";
import { deviceHref, h, replace, say } from "./dom.js";
import { dateTime, fromInputTime, toInputTime, value } from "./format.js";
import { showError } from "./session.js";

const SHELVE_DEFAULT_MS = 3_600_000; // an hour from now, to begin with

/** Whether an alarm is open (not cleared). */
export const isOpen = (alarm) => alarm.state !== "cleared";

/** Whether an alarm is shelved at `now`. */
export const isShelved = (alarm, now = Date.now()) =>
  alarm.shelved_until !== null && alarm.shelved_until > now;

/** The rules the user may see, by id: names, and whether users may clear their alarms. */
export class RuleBook {
  constructor() {
    this.rules = new Map();
    this.asked = new Set();
    this.loading = null;
  }

  async load() {
    this.loading ??= api("/api/alarm-rules")
      .then((rules) => {
        this.rules = new Map(rules.map((r) => [r.id, r]));
      })
      .finally(() => {
        this.loading = null;
      });
    return this.loading;
  }

  /** Make sure `ruleId` is known (a rule made after the page loaded): one request. */
  async know(ruleId) {
    if (this.rules.has(ruleId) || this.asked.has(ruleId)) return;
    this.asked.add(ruleId); // a rule the user may not see stays unknown: ask once
    await this.load();
  }

  name(ruleId) {
    return this.rules.get(ruleId)?.name ?? ruleId;
  }

  /** False only when the rule is known to refuse it; the hub decides in any case. */
  clearable(ruleId) {
    return this.rules.get(ruleId)?.clearable_by_user ?? true;
  }
}

/** Open first, then newest first (ids grow with time). */
function before(a, b) {
  if (isOpen(a) !== isOpen(b)) return isOpen(a) ? -1 : 1;
  return b.id - a.id;
}

function stateChips(alarm) {
  const chips = [h("span", { class: `chip state ${alarm.state}`, text: alarm.state })];
  if (alarm.latched) {
    chips.push(
      h("span", {
        class: "chip latched",
        text: "latched",
        title: "its condition is gone; acknowledging clears it",
      }),
    );
  }
  if (alarm.in_maintenance) {
    chips.push(
      h("span", {
        class: "chip maintenance",
        text: "maintenance",
        title: "raised in a maintenance window: its notifications wait for the window's end",
      }),
    );
  }
  if (alarm.flapping) {
    chips.push(
      h("span", {
        class: "chip flapping",
        text: "flapping",
        title: "raised and cleared too often: notified once it settles",
      }),
    );
  }
  if (isOpen(alarm) && isShelved(alarm)) {
    chips.push(
      h("span", {
        class: "chip shelved",
        text: "shelved",
        title: `shelved until ${dateTime(alarm.shelved_until)}`,
      }),
    );
  }
  return chips;
}

export class AlarmTable {
  /**
   * @param {HTMLElement} tbody where the rows go
   * @param {{rules: RuleBook, canWrite: boolean, device?: boolean,
   *          deviceName?: (id: string) => string, onChange?: () => void}} options
   */
  constructor(tbody, options) {
    this.tbody = tbody;
    this.rules = options.rules;
    this.canWrite = options.canWrite;
    this.withDevice = options.device ?? true;
    this.deviceName = options.deviceName ?? ((id) => id);
    this.onChange = options.onChange ?? (() => {});
    this.entries = new Map(); // id → {alarm, history, row, detail, parts (of the details)}
  }

  get size() {
    return this.entries.size;
  }

  has(id) {
    return this.entries.has(id);
  }

  /** Show exactly these alarms (details that were open stay open). */
  show(alarms) {
    const keep = new Set(alarms.map((a) => a.id));
    for (const id of [...this.entries.keys()]) if (!keep.has(id)) this.entries.delete(id);
    for (const alarm of alarms) this.put(alarm, { quiet: true });
    this.order();
    this.onChange();
  }

  /** Add or update one alarm (an item of GET /api/alarms, or GET /api/alarms/{id}). */
  put(alarm, { quiet = false, fresh = false } = {}) {
    let entry = this.entries.get(alarm.id);
    if (!entry) {
      entry = { alarm, row: null, detail: null, history: null };
      this.entries.set(alarm.id, entry);
    }
    const moved = !entry.row || isOpen(entry.alarm) !== isOpen(alarm);
    entry.alarm = alarm;
    if (alarm.history) entry.history = alarm.history;
    const row = this.makeRow(entry);
    if (fresh) row.classList.add("flash");
    const focused = entry.row?.contains(document.activeElement);
    entry.row?.replaceWith(row);
    entry.row = row;
    if (focused) row.querySelector("button")?.focus(); // the Details/Close button keeps it
    if (entry.detail) this.fillDetail(entry);
    if (!quiet) {
      if (moved) this.place(entry);
      this.onChange();
    }
  }

  /** Put an entry's rows where they sort, moving nothing else (a comment being typed in
   * another alarm's details keeps its focus). */
  place(entry) {
    let next = null;
    for (const other of this.tbody.querySelectorAll("tr.alarm")) {
      const found = this.entries.get(Number(other.dataset.alarm));
      if (found && found !== entry && before(entry.alarm, found.alarm) < 0) {
        next = other;
        break;
      }
    }
    this.tbody.insertBefore(entry.row, next);
    if (entry.detail) entry.row.after(entry.detail);
  }

  drop(id) {
    const entry = this.entries.get(id);
    if (!entry) return;
    entry.row?.remove();
    entry.detail?.remove();
    this.entries.delete(id);
    this.onChange();
  }

  order() {
    const sorted = [...this.entries.values()].sort((a, b) => before(a.alarm, b.alarm));
    replace(
      this.tbody,
      sorted.map((e) => [e.row, e.detail]),
    );
  }

  makeRow(entry) {
    const { alarm } = entry;
    const open = Boolean(entry.detail);
    const toggle = h("button", {
      type: "button",
      class: "quiet",
      text: open ? "Close" : "Details",
      "aria-expanded": open ? "true" : "false",
      onclick: () => this.toggle(entry),
    });
    const classes = ["alarm", alarm.severity, isOpen(alarm) ? "open" : "inactive"];
    if (isShelved(alarm)) classes.push("is-shelved");
    return h(
      "tr",
      { class: classes.join(" "), dataset: { alarm: String(alarm.id), state: alarm.state } },
      h("td", { class: "severity", "data-label": "Severity" }, h("span", { class: `chip ${alarm.severity}`, text: alarm.severity })),
      this.withDevice
        ? h(
            "td",
            { class: "device", "data-label": "Device" },
            h("a", { href: deviceHref(alarm.device_id), text: this.deviceName(alarm.device_id) }),
          )
        : null,
      h("td", { class: "rule", "data-label": "Rule", text: this.rules.name(alarm.rule_id) }),
      h("td", { class: "message", "data-label": "Message", text: alarm.message || "—" }),
      h("td", { class: "when", "data-label": "Raised", title: dateTime(alarm.raised_at) }, showAge(h("span"), alarm.raised_at)),
      h("td", { class: "state", "data-label": "State" }, stateChips(alarm)),
      h("td", { class: "row-actions" }, toggle),
    );
  }

  async toggle(entry) {
    if (entry.detail) {
      entry.detail.remove();
      entry.detail = null;
      entry.parts = null;
      this.put(entry.alarm, { quiet: true });
      return;
    }
    entry.detail = h("tr", { class: "subrow alarm-detail", dataset: { alarm: String(entry.alarm.id) } });
    this.put(entry.alarm, { quiet: true });
    entry.row.after(entry.detail);
    entry.row.querySelector("button")?.focus();
    await this.refresh(entry.alarm.id);
  }

  /** Fetch one alarm with its history again (after an action, or a live change). */
  async refresh(id) {
    const entry = this.entries.get(id);
    if (!entry) return;
    try {
      this.put(await api(`/api/alarms/${id}`));
    } catch (error) {
      if (entry.parts) showError(entry.parts.status, error);
    }
  }

  /**
   * Write an open alarm's details. The facts and the history are written anew each time; the
   * action form only when what it offers changes, so that a live change or a refresh arriving
   * while someone types a comment keeps the input, its text and its focus.
   */
  fillDetail(entry) {
    const { alarm } = entry;
    if (!entry.parts) {
      entry.parts = {
        facts: h("dl", { class: "facts" }),
        history: h("div"),
        actions: h("div"),
        status: h("p", { class: "msg", role: "status", hidden: true }),
        offer: null,
      };
      const { facts, history, actions, status } = entry.parts;
      const columns = this.withDevice ? 7 : 6;
      replace(
        entry.detail,
        h("td", { colspan: String(columns) }, facts, h("h3", { text: "History" }), history, actions, status),
      );
    }
    const { parts } = entry;
    const facts = [
      ["Alarm", `#${alarm.id} · rule ${alarm.rule_id}`],
      ["Raised", dateTime(alarm.raised_at)],
      ["Value", value(alarm.value)],
      ["Condition", alarm.condition_active ? "holds" : "gone"],
      alarm.acknowledged_by
        ? ["Acknowledged", `${dateTime(alarm.acknowledged_at)} by ${alarm.acknowledged_by}${alarm.ack_comment ? `: ${alarm.ack_comment}` : ""}`]
        : null,
      isShelved(alarm) ? ["Shelved until", dateTime(alarm.shelved_until)] : null,
      alarm.assignee ? ["Assigned to", alarm.assignee] : null,
      alarm.cleared_at
        ? ["Cleared", `${dateTime(alarm.cleared_at)} by ${alarm.cleared_by ?? "hub"}${alarm.clear_reason ? ` (${alarm.clear_reason})` : ""}`]
        : null,
    ].filter(Boolean);
    replace(parts.facts, facts.map(([k, v]) => [h("dt", { text: k }), h("dd", { text: v })]));
    replace(parts.history, this.historyList(entry.history));
    const offer =
      this.canWrite && isOpen(alarm)
        ? `${alarm.state} ${this.rules.clearable(alarm.rule_id)} ${isShelved(alarm)} ${alarm.assignee}`
        : "";
    if (offer !== parts.offer) {
      parts.offer = offer;
      const typed = parts.actions.querySelector('input[name="comment"]')?.value ?? "";
      replace(parts.actions, offer ? this.actions(entry, parts.status, typed) : null);
    }
  }

  historyList(history) {
    if (!history) return h("p", { class: "muted", text: "…" });
    return h(
      "ol",
      { class: "alarm-history" },
      history.map((change) =>
        h(
          "li",
          { dataset: { kind: change.kind } },
          h("span", { class: "when", text: dateTime(change.at) }),
          h("span", { class: "kind", text: change.kind }),
          h("span", { class: "by", text: change.actor }),
          change.from_state && change.from_state !== change.to_state
            ? h("span", { class: "muted", text: `${change.from_state} → ${change.to_state}` })
            : null,
          change.comment ? h("q", { class: "comment", text: change.comment }) : null,
        ),
      ),
    );
  }

  actions(entry, status, typed) {
    const { alarm } = entry;
    const comment = h("input", { name: "comment", maxlength: "1024", placeholder: "optional", autocomplete: "off", value: typed || null });
    const until = h("input", {
      type: "datetime-local",
      name: "until",
      step: "60",
      value: toInputTime(Date.now() + SHELVE_DEFAULT_MS),
    });
    const act = (what, body) => async (event) => {
      event.preventDefault();
      const form = event.currentTarget.form;
      const buttons = [...form.querySelectorAll("button")];
      for (const b of buttons) b.disabled = true;
      say(status, "");
      try {
        await api(`/api/alarms/${alarm.id}/${what}`, { method: "POST", body: body() });
        comment.value = "";
        await this.refresh(alarm.id);
      } catch (error) {
        showError(status, error);
      } finally {
        for (const b of buttons) b.disabled = false;
      }
    };
    const withComment = () => ({ comment: comment.value.trim() });
    const assignee = assigneeSelect(alarm, status);
    return h(
      "form",
      { class: "alarm-actions", onsubmit: (event) => event.preventDefault() },
      h("label", { class: "wide" }, "Comment", comment),
      h(
        "div",
        { class: "buttons" },
        alarm.state === "active"
          ? h("button", { type: "button", text: "Acknowledge", onclick: act("acknowledge", withComment) })
          : null,
        this.rules.clearable(alarm.rule_id)
          ? h("button", { type: "button", class: "danger", text: "Clear", onclick: act("clear", withComment) })
          : null,
        h("button", { type: "button", class: "quiet", text: "Add comment", onclick: act("comment", withComment) }),
      ),
      h("label", {}, "Assign to", assignee),
      h("button", {
        type: "button",
        class: "quiet",
        text: "Assign",
        onclick: act("assign", () => ({ assignee: assignee.value || null, ...withComment() })),
      }),
      h("label", {}, "Shelve until", until),
      h("button", {
        type: "button",
        class: "quiet",
        text: "Shelve",
        onclick: act("shelve", () => ({ until: fromInputTime(until.value), ...withComment() })),
      }),
      isShelved(alarm)
        ? h("button", { type: "button", class: "quiet", text: "Unshelve", onclick: act("unshelve", withComment) })
        : null,
    );
  }
}
