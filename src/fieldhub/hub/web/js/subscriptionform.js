// The subscription form of "My notifications": written from a stored subscription and read
// back into the body POST/PUT /api/notification-subscriptions take. Fields are named by where
// they sit in that body ("quiet_hours.timezone"), so a 422's `loc` finds its field
// (fielderrors.js). E-mail addresses are asked only for e-mail channels.

import { h, replace } from "./dom.js";

/** "a, b" → ["a", "b"] (empty items dropped). */
const listOf = (text) =>
  String(text ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);

/** The time zones the browser knows, the user's own first chosen. */
export function timeZones() {
  const own = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  const all = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : [];
  return { own, all: all.includes(own) ? all : [own, ...all] };
}

export class SubscriptionForm {
  /**
   * @param {HTMLFormElement} form the page's #subscription-form
   * @param {{channels: {id: number, name: string, kind: string}[], sites: string[], admin: boolean}} choices
   */
  constructor(form, choices) {
    this.form = form;
    this.channels = new Map(choices.channels.map((c) => [c.id, c]));
    this.editing = null; // the id of the subscription being edited, null for a new one
    this.zone = timeZones();
    replace(
      this.field("channel_id"),
      choices.channels.map((c) => h("option", { value: String(c.id), text: `${c.name} (${c.kind})` })),
    );
    replace(
      this.field("quiet_hours.timezone"),
      this.zone.all.map((z) => h("option", { value: z, text: z })),
    );
    const sites = form.querySelector("#sites-field");
    for (const site of choices.sites) {
      sites.append(h("label", {}, h("input", { type: "checkbox", name: "sites", value: site }), ` ${site}`));
    }
    form.querySelector("#hub-wide-field").hidden = !choices.admin;
    this.field("channel_id").addEventListener("change", () => this.showFields());
    this.field("quiet").addEventListener("change", () => this.showFields());
    this.clear();
  }

  field(name) {
    return this.form.elements.namedItem(name);
  }

  checked(name) {
    return [...this.form.querySelectorAll(`input[name="${name}"]:checked`)].map((box) => box.value);
  }

  check(name, values) {
    for (const box of this.form.querySelectorAll(`input[name="${name}"]`)) box.checked = values.includes(box.value);
  }

  /** E-mail addresses for e-mail channels only; the quiet hours' fields when asked for. */
  showFields() {
    const channel = this.channels.get(Number(this.field("channel_id").value));
    this.form.querySelector("[data-email]").hidden = channel?.kind !== "email";
    const quiet = this.field("quiet").checked;
    for (const el of this.form.querySelectorAll("#quiet-hours > :not(legend)")) el.hidden = !quiet;
  }

  /** Empty the form for a new subscription (the user's own time zone chosen). */
  clear() {
    this.form.reset();
    this.editing = null;
    this.field("quiet_hours.timezone").value = this.zone.own;
    this.field("hub_wide").disabled = false;
    this.showFields();
  }

  /** Write a stored subscription into the form, to edit it. */
  fill(sub) {
    this.clear();
    this.editing = sub.id;
    this.field("channel_id").value = String(sub.channel_id);
    this.field("to").value = sub.to.join(", ");
    this.field("hub_wide").checked = sub.owner_id === null;
    this.field("hub_wide").disabled = true; // the owner stays (PUT ignores it)
    this.field("enabled").checked = sub.enabled;
    this.check("sites", sub.sites);
    this.field("min_severity").value = sub.min_severity;
    this.field("rules").value = sub.rules.join(", ");
    this.check("changes", sub.changes);
    const quiet = sub.quiet_hours;
    this.field("quiet").checked = quiet !== null;
    if (quiet) {
      const zone = this.field("quiet_hours.timezone");
      if (![...zone.options].some((o) => o.value === quiet.timezone)) zone.append(h("option", { value: quiet.timezone, text: quiet.timezone }));
      zone.value = quiet.timezone;
      this.field("quiet_hours.from").value = quiet.from.slice(0, 5);
      this.field("quiet_hours.to").value = quiet.to.slice(0, 5);
      this.check("quiet_hours.days", quiet.days);
      this.check("quiet_hours.pass_severities", quiet.pass_severities);
    }
    this.field("group_interval_s").value = String(sub.group_interval_s);
    this.field("max_per_hour").value = String(sub.max_per_hour);
    this.showFields();
  }

  /** The subscription's body as the API takes it. */
  read() {
    const channel = this.channels.get(Number(this.field("channel_id").value));
    const body = {
      channel_id: Number(this.field("channel_id").value),
      to: channel?.kind === "email" ? listOf(this.field("to").value) : [],
      sites: this.checked("sites"),
      min_severity: this.field("min_severity").value,
      rules: listOf(this.field("rules").value),
      changes: this.checked("changes"),
      quiet_hours: null,
      group_interval_s: Number(this.field("group_interval_s").value || 0),
      max_per_hour: Number(this.field("max_per_hour").value || 0),
      enabled: this.field("enabled").checked,
    };
    if (!this.editing && this.field("hub_wide").checked) body.owner_id = null;
    if (this.field("quiet").checked) {
      body.quiet_hours = {
        timezone: this.field("quiet_hours.timezone").value,
        from: this.field("quiet_hours.from").value,
        to: this.field("quiet_hours.to").value,
        days: this.checked("quiet_hours.days"),
        pass_severities: this.checked("quiet_hours.pass_severities"),
      };
    }
    return body;
  }
}
