// API tokens: the user's own (make one, shown once; revoke), and rows reused for an admin's
// view of another user's tokens.

import { showAge } from "../ages.js";
import { api } from "../api.js";
import { byId, h, replace, say } from "../dom.js";
import { ago, dateTime } from "../format.js";
import { shownOnce } from "../secret.js";
import { showError } from "../session.js";

function tokenState(token) {
  if (token.revoked_at) return showAge(h("span"), token.revoked_at, (ts, now) => `revoked ${ago(ts, now)}`);
  if (token.expires_at && token.expires_at < Date.now()) return "expired";
  return token.expires_at ? dateTime(token.expires_at) : "never";
}

/** A row for one token; `revoke` (optional) makes its button. */
export function tokenRow(token, revoke) {
  const active = !token.revoked_at && !(token.expires_at && token.expires_at < Date.now());
  return h(
    "tr",
    { class: active ? "" : "inactive", dataset: { token: String(token.id) } },
    h("td", { "data-label": "Name", text: token.name }),
    h("td", { "data-label": "Scopes", text: token.scopes.join(", ") }),
    showAge(h("td", { "data-label": "Made", title: dateTime(token.created_at) }), token.created_at),
    h("td", { "data-label": "Expires" }, tokenState(token)),
    showAge(h("td", { "data-label": "Last used" }), token.last_used_at ?? null),
    h(
      "td",
      { class: "row-actions" },
      active && revoke
        ? h("button", { type: "button", class: "danger", text: "Revoke", onclick: () => revoke(token) })
        : null,
    ),
  );
}

async function loadTokens() {
  const status = byId("tokens-status");
  const tokens = await api("/api/tokens");
  const revoke = async (token) => {
    if (!confirm(`Revoke the token "${token.name}"? Programs using it stop at once.`)) return;
    try {
      await api(`/api/tokens/${token.id}`, { method: "DELETE" });
      say(status, `Token "${token.name}" revoked.`, "ok");
    } catch (error) {
      showError(status, error);
    }
    await loadTokens().catch((error) => showError(status, error));
  };
  replace(byId("token-rows"), tokens.map((token) => tokenRow(token, revoke)));
  byId("no-tokens").hidden = tokens.length > 0;
}

/** Set up the own-tokens section: list, make (shown once), revoke. */
export function setupTokens() {
  const form = byId("add-token-form");
  const status = byId("tokens-status");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    say(status, "");
    const data = new FormData(form);
    const expires = String(data.get("expires") ?? "");
    const body = {
      name: String(data.get("name") ?? "").trim(),
      scopes: data.getAll("scopes").map(String),
      expires_in_s: expires ? Number(expires) : null,
    };
    if (!body.scopes.length) {
      say(status, "Choose at least one scope.", "error");
      return;
    }
    try {
      const made = await api("/api/tokens", { method: "POST", body });
      replace(
        byId("new-token"),
        shownOnce(`Token "${made.name}"`, [["token", made.token]], "Send it as Authorization: Bearer <token>."),
      );
      form.reset();
    } catch (error) {
      showError(status, error);
    }
    await loadTokens().catch((error) => showError(status, error));
  });
  return loadTokens().catch((error) => showError(status, error));
}
