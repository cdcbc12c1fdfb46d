// My notifications: the user's subscriptions (admins: everyone's, hub-wide ones too) with a
// form to add, change and delete them: channel (of the enabled ones, GET
// /api/notification-channels/choices), e-mail addresses, sites, minimum severity, rules,
// change kinds, quiet hours in a time zone, grouping and a rate limit. The hub checks every
// subscription; its 422s are shown at the fields they name.

import { api } from "../api.js";
import { byId, say } from "../dom.js";
import { clearFieldErrors, showFieldErrors } from "../fielderrors.js";
import { SubscriptionForm } from "../subscriptionform.js";
import { showSubscriptions } from "../subscriptionrows.js";
import { showError, startPage } from "../session.js";

const PATH = "/api/notification-subscriptions";
const status = byId("status");
const formStatus = byId("form-status");
const form = byId("subscription-form");
const heading = byId("h-editor");
const channelNames = new Map(); // id → name
let editor;
let me;

function ownerName(ownerId) {
  if (ownerId === null) return "hub-wide";
  return ownerId === me.user.id ? "yours" : `user #${ownerId}`;
}

async function loadSubscriptions() {
  const subs = await api(PATH);
  showSubscriptions(byId("subscription-rows"), subs, {
    channelName: (id) => channelNames.get(id) ?? `channel #${id} (disabled)`,
    ownerName,
    edit,
    remove,
  });
  byId("no-subscriptions").hidden = subs.length > 0;
}

function startOver() {
  editor.clear();
  clearFieldErrors(form);
  say(formStatus, "");
  heading.textContent = "New subscription";
}

function edit(sub) {
  startOver();
  editor.fill(sub);
  heading.textContent = `Edit subscription #${sub.id}`;
  byId("editor").scrollIntoView({ block: "start" });
}

async function remove(sub) {
  try {
    await api(`${PATH}/${sub.id}`, { method: "DELETE" });
    say(status, `Subscription #${sub.id} deleted.`, "ok");
    if (editor.editing === sub.id) startOver();
    await loadSubscriptions();
  } catch (error) {
    showError(status, error);
  }
}

async function save(event) {
  event.preventDefault();
  const buttons = [...form.querySelectorAll("button")];
  for (const b of buttons) b.disabled = true;
  clearFieldErrors(form);
  say(formStatus, "");
  try {
    const body = editor.read();
    const saved = editor.editing
      ? await api(`${PATH}/${editor.editing}`, { method: "PUT", body })
      : await api(PATH, { method: "POST", body });
    await loadSubscriptions();
    editor.fill(saved);
    heading.textContent = `Edit subscription #${saved.id}`;
    say(formStatus, `Subscription #${saved.id} saved.`, "ok");
  } catch (error) {
    showFieldErrors(form, formStatus, error);
  } finally {
    for (const b of buttons) b.disabled = false;
  }
}

/** The sites a subscription may name: the user's; an admin's, those the fleet's devices carry
 * (counted by the hub in one request, however large the fleet; "" is "no site"). */
async function sitesOf() {
  if (me.user.role !== "admin") return [...me.user.sites].sort();
  const summary = await api("/api/fleet/summary");
  return Object.keys(summary.sites).filter(Boolean).sort();
}

async function main() {
  const started = await startPage("notifications");
  me = started.me;
  started.live.start(); // the navigation's alarm count stays current
  const [channels, sites] = await Promise.all([api("/api/notification-channels/choices"), sitesOf()]);
  for (const c of channels) channelNames.set(c.id, c.name);
  editor = new SubscriptionForm(form, { channels, sites, admin: me.user.role === "admin" });
  form.addEventListener("submit", save);
  byId("new-subscription").addEventListener("click", startOver);
  if (!channels.length) say(formStatus, "No channel is enabled yet: an admin adds them.", "");
  await loadSubscriptions();
}

main().catch((error) => showError(status, error));
