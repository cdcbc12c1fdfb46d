// Add a device: register it with its labels, then show its MQTT credentials once.

import { api } from "../api.js";
import { byId, h, replace, say } from "../dom.js";
import { shownOnce } from "../secret.js";
import { showError } from "../session.js";

function labelsOf(form) {
  const labels = {};
  const extra = String(form.elements.labels.value ?? "");
  for (const pair of extra.split(",").map((p) => p.trim()).filter(Boolean)) {
    const [key, ...rest] = pair.split("=");
    if (!key.trim() || !rest.length) throw new Error(`"${pair}": write labels as key=value`);
    labels[key.trim()] = rest.join("=").trim();
  }
  for (const key of ["site", "group"]) {
    const v = form.elements[key].value.trim();
    if (v) labels[key] = v;
  }
  return labels;
}

/** The site names the add-device form offers (they come after the form works). */
export function offerSites(sites) {
  replace(byId("site-names"), [...sites].sort().map((s) => h("option", { value: s })));
}

/** Set up the add-device form. Its button is disabled in the page until this ran: a click
 * before would submit the form the browser's way, a reload that drops what was typed. */
export function setupAddDevice(me) {
  const form = byId("add-device-form");
  const status = byId("add-device-status");
  if (me.user.role !== "admin" && me.user.sites.length === 1) {
    form.elements.site.value = me.user.sites[0];
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    say(status, "");
    let body;
    try {
      body = {
        id: form.elements.id.value.trim(),
        name: form.elements.name.value.trim(),
        labels: labelsOf(form),
      };
    } catch (error) {
      say(status, error.message, "error");
      return;
    }
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const created = await api("/api/devices", { method: "POST", body });
      const c = created.credentials;
      replace(
        byId("new-credentials"),
        shownOnce(
          `Credentials of ${created.id}`,
          [
            ["username", c.username],
            ["secret", c.secret],
            ["client id", c.client_id],
          ],
          "The agent logs in to the broker with these: hub.username in agent.yaml, the secret " +
            "alone in its secret file (docs/agent.md). Lost? Rotate them; they cannot be shown again.",
        ),
      );
      say(status, `Device ${created.id} added.`, "ok");
      form.reset();
    } catch (error) {
      showError(status, error);
    } finally {
      button.disabled = false;
    }
  });
  form.querySelector("button[type=submit]").disabled = false;
}
