// The subscriptions table of "My notifications": channel, whose (yours, hub-wide, or another
// user's for admins), what passes the filter, quiet hours, enabled; edit and delete (asked
// twice in the row itself: no browser dialog).

import { h, replace } from "./dom.js";

/** What a subscription lets through, in a line. */
export function filterText(sub) {
  const parts = [`${sub.min_severity} or worse`];
  parts.push(sub.sites.length ? `sites ${sub.sites.join(", ")}` : "every site");
  if (sub.rules.length) parts.push(`rules ${sub.rules.join(", ")}`);
  parts.push(sub.changes.join(", "));
  return parts.join(" · ");
}

/** Quiet hours in a line: "22:00 to 07:00 Europe/Berlin, mon tue …; critical still sent". */
export function quietText(quiet) {
  if (!quiet) return "none";
  const passing = quiet.pass_severities.length ? `; ${quiet.pass_severities.join(", ")} still sent` : "";
  return `${quiet.from.slice(0, 5)} to ${quiet.to.slice(0, 5)} ${quiet.timezone}, ${quiet.days.join(" ")}${passing}`;
}

/**
 * Show `subs` in `tbody`.
 * @param {{channelName: (id: number) => string, ownerName: (id: number | null) => string,
 *          edit: (sub) => void, remove: (sub) => void}} actions
 */
export function showSubscriptions(tbody, subs, actions) {
  replace(
    tbody,
    subs.map((sub) => {
      const confirm = h("button", { type: "button", class: "danger", text: "Really delete", hidden: true, onclick: () => actions.remove(sub) });
      return h(
        "tr",
        { class: `subscription ${sub.enabled ? "" : "inactive"}`.trim(), dataset: { subscription: String(sub.id) } },
        h("td", { class: "channel", "data-label": "Channel", text: actions.channelName(sub.channel_id) }),
        h("td", { class: "owner", "data-label": "Whose", text: actions.ownerName(sub.owner_id) }),
        h("td", { class: "filter", "data-label": "What", text: filterText(sub) }),
        h("td", { class: "quiet", "data-label": "Quiet hours", text: quietText(sub.quiet_hours) }),
        h("td", { class: "enabled", "data-label": "Enabled", text: sub.enabled ? "yes" : "no" }),
        h(
          "td",
          { class: "row-actions" },
          h("button", { type: "button", class: "quiet", text: "Edit", onclick: () => actions.edit(sub) }),
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
        ),
      );
    }),
  );
}
