// Bundle signing keys (admins): the public keys the hub checks uploaded bundles against
// (GET/POST /api/bundle-keys), each with its expiry, and a form to register one with an
// optional expiry, entered in the browser's local time and sent as epoch ms. From the expiry
// on, bundles the key signed are refused (docs/bundles.md); a 422 lands next to its field.

import { api } from "../api.js";
import { byId, h, replace, say } from "../dom.js";
import { clearFieldErrors, showFieldErrors } from "../fielderrors.js";
import { dateTime, fromInputTime } from "../format.js";

function keyState(key, now) {
  if (key.revoked_at) return `revoked ${dateTime(key.revoked_at)}`;
  if (key.expires_at !== null && key.expires_at <= now) return `expired ${dateTime(key.expires_at)}`;
  return key.expires_at === null ? "never expires" : `until ${dateTime(key.expires_at)}`;
}

function keyRow(key, now) {
  const usable = !key.revoked_at && (key.expires_at === null || key.expires_at > now);
  return h(
    "tr",
    { class: usable ? "" : "inactive", dataset: { key: key.key_id } },
    h("td", { "data-label": "Name", text: key.name }),
    h("td", { "data-label": "Key id" }, h("code", { text: key.key_id })),
    h("td", { "data-label": "Trusted", class: "expiry", text: keyState(key, now) }),
    h("td", { "data-label": "Added", text: `${dateTime(key.added_at)} by ${key.added_by}` }),
  );
}

async function loadKeys() {
  const keys = await api("/api/bundle-keys");
  const now = Date.now();
  replace(byId("bundle-key-rows"), keys.map((key) => keyRow(key, now)));
  byId("no-bundle-keys").hidden = keys.length > 0;
}

/** Set up the section: the list for admins who may read it, the form for those who may add. */
export async function setupBundleKeys(canWrite) {
  const form = byId("bundle-key-form");
  const status = byId("bundle-keys-status");
  if (canWrite) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      say(status, "");
      clearFieldErrors(form);
      const data = new FormData(form);
      const body = {
        name: String(data.get("name") ?? "").trim(),
        public_key: String(data.get("public_key") ?? "").trim(),
        expires_at: fromInputTime(String(data.get("expires_at") ?? "")),
      };
      try {
        const key = await api("/api/bundle-keys", { method: "POST", body });
        say(status, `Key ${key.key_id} registered.`, "ok");
        form.reset();
        await loadKeys();
      } catch (error) {
        showFieldErrors(form, status, error);
      }
    });
  }
  await loadKeys();
}
