// Users, for admins: list, add, change role and sites, disable, set a password, remove, and
// each user's API tokens.

import { api } from "../api.js";
import { byId, h, replace, say } from "../dom.js";
import { Permission, showError } from "../session.js";
import { tokenRow } from "./tokens.js";

const ROLES = ["viewer", "operator", "admin"];
let me;
let canWrite = false;

const status = () => byId("users-status");
const sitesOf = (text) => text.split(",").map((s) => s.trim()).filter(Boolean);

async function act(work, done) {
  say(status(), "");
  try {
    await work();
    if (done) say(status(), done, "ok");
  } catch (error) {
    showError(status(), error);
  }
  await loadUsers().catch((error) => showError(status(), error));
}

function stateText(user) {
  if (user.disabled) return "disabled";
  if (!user.has_password) return "no password yet";
  return "active";
}

async function showTokens(user, holder) {
  if (!holder.hidden) {
    holder.hidden = true;
    return;
  }
  const tokens = await api(`/api/users/${user.id}/tokens`);
  const revoke = canWrite
    ? (token) =>
        act(
          () => api(`/api/users/${user.id}/tokens/${token.id}`, { method: "DELETE" }),
          `Token "${token.name}" of ${user.name} revoked.`,
        )
    : null;
  replace(
    holder.firstChild,
    tokens.length
      ? h("table", { class: "tokens" }, h("tbody", {}, tokens.map((t) => tokenRow(t, revoke))))
      : h("p", { class: "muted", text: `${user.name} has no API tokens.` }),
  );
  holder.hidden = false;
}

function userRows(user) {
  const role = h(
    "select",
    { name: "role", disabled: !canWrite, "aria-label": `role of ${user.name}` },
    ROLES.map((r) => h("option", { value: r, text: r, selected: r === user.role })),
  );
  const sites = h("input", {
    name: "sites",
    value: user.sites.join(", "),
    disabled: !canWrite || user.role === "admin",
    placeholder: user.role === "admin" ? "all" : "none",
    "aria-label": `sites of ${user.name}`,
  });
  const tokens = h("tr", { class: "subrow", hidden: true }, h("td", { colspan: "5" }));
  const password = h("input", {
    type: "password",
    minlength: "10",
    autocomplete: "new-password",
    placeholder: "new password",
    "aria-label": `new password of ${user.name}`,
  });
  const passwordForm = h(
    "form",
    { class: "inline", hidden: true },
    password,
    h("button", { type: "submit", text: "Set" }),
  );
  passwordForm.addEventListener("submit", (event) => {
    event.preventDefault();
    act(
      () => api(`/api/users/${user.id}/password`, { method: "PUT", body: { password: password.value } }),
      `Password of ${user.name} set; their sessions ended.`,
    );
  });
  const self = user.id === me.user.id;
  const buttons = canWrite
    ? [
        h("button", {
          type: "button",
          text: "Save",
          onclick: () =>
            act(
              () =>
                api(`/api/users/${user.id}`, {
                  method: "PATCH",
                  body: { role: role.value, sites: sitesOf(sites.value) },
                }),
              `${user.name} saved.`,
            ),
        }),
        h("button", {
          type: "button",
          class: "quiet",
          text: user.disabled ? "Enable" : "Disable",
          onclick: () =>
            act(
              () => api(`/api/users/${user.id}`, { method: "PATCH", body: { disabled: !user.disabled } }),
              `${user.name} ${user.disabled ? "enabled" : "disabled"}.`,
            ),
        }),
        h("button", {
          type: "button",
          class: "quiet",
          text: "Password…",
          onclick: () => {
            passwordForm.hidden = !passwordForm.hidden;
          },
        }),
      ]
    : [];
  buttons.push(
    h("button", {
      type: "button",
      class: "quiet",
      text: "Tokens",
      onclick: () => showTokens(user, tokens).catch((error) => showError(status(), error)),
    }),
  );
  if (canWrite && !self) {
    buttons.push(
      h("button", {
        type: "button",
        class: "danger",
        text: "Remove",
        onclick: () => {
          if (confirm(`Remove the user ${user.name} with their sessions and tokens?`)) {
            act(() => api(`/api/users/${user.id}`, { method: "DELETE" }), `${user.name} removed.`);
          }
        },
      }),
    );
  }
  const row = h(
    "tr",
    { dataset: { user: user.name } },
    h("td", { "data-label": "Name" }, user.name, self ? h("span", { class: "muted", text: " (you)" }) : null),
    h("td", { "data-label": "Role" }, role),
    h("td", { "data-label": "Sites" }, sites),
    h("td", { "data-label": "State", text: stateText(user) }),
    h("td", { class: "row-actions" }, buttons, passwordForm),
  );
  return [row, tokens];
}

async function loadUsers() {
  const users = await api("/api/users");
  replace(byId("user-rows"), users.map(userRows));
}

/** Set up the users section (for users:read; changes for users:write). */
export function setupUsers(current) {
  me = current;
  canWrite = me.can(Permission.USERS_WRITE);
  const form = byId("add-user-form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const body = {
      name: form.elements.name.value.trim(),
      role: form.elements.role.value,
      sites: sitesOf(form.elements.sites.value),
      password: form.elements.password.value || null,
    };
    act(async () => {
      await api("/api/users", { method: "POST", body });
      form.reset();
    }, `User ${body.name} added.`);
  });
  return loadUsers().catch((error) => showError(status(), error));
}
