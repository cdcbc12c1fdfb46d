// Devices that claimed with a claim token and wait for an operator: approve or reject.

import { showAge } from "../ages.js";
import { api } from "../api.js";
import { byId, h, replace, say } from "../dom.js";
import { dateTime } from "../format.js";
import { showError } from "../session.js";

let canDecide = false;

const labelText = (labels) => Object.entries(labels ?? {}).map(([k, v]) => `${k}=${v}`).join(", ");

async function decide(deviceId, verdict) {
  const status = byId("claims-status");
  try {
    await api(`/api/claims/${encodeURIComponent(deviceId)}/${verdict}`, { method: "POST" });
    say(status, `${deviceId}: ${verdict === "approve" ? "approved; it gets its credentials at its next poll" : "rejected"}.`, "ok");
  } catch (error) {
    showError(status, error);
  }
  await loadClaims().catch((error) => showError(status, error));
}

/** List the pending claims (with approve and reject buttons for devices:write). */
async function loadClaims() {
  const claims = await api("/api/claims", { query: { status: "pending" } });
  replace(
    byId("claim-rows"),
    claims.map((claim) =>
      h(
        "tr",
        { dataset: { claim: claim.device_id } },
        h("td", { "data-label": "Device", text: claim.device_id }),
        h("td", { "data-label": "Labels", text: labelText(claim.labels) || "—" }),
        h("td", { "data-label": "Says it is", class: "data", text: Object.keys(claim.info ?? {}).length ? JSON.stringify(claim.info) : "—" }),
        showAge(h("td", { "data-label": "Asked", title: dateTime(claim.requested_at) }), claim.requested_at),
        h(
          "td",
          { class: "row-actions" },
          canDecide
            ? [
                h("button", { type: "button", text: "Approve", onclick: () => decide(claim.device_id, "approve") }),
                h("button", { type: "button", class: "danger", text: "Reject", onclick: () => decide(claim.device_id, "reject") }),
              ]
            : null,
        ),
      ),
    ),
  );
  byId("no-claims").hidden = claims.length > 0;
}

/** Show the pending claims; `allowed`: the user may decide (devices:write). */
export function setupClaims(allowed) {
  canDecide = allowed;
  return loadClaims().catch((error) => showError(byId("claims-status"), error));
}
