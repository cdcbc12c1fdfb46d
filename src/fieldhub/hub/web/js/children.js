// A gateway's children on its device page: each with its presence and why (the link state the
// gateway reports: "linked to gateway gw-1", "link lost: …", or "via gw-1: gateway offline"
// while the gateway itself is away). Kept current by the live feed.

import { api } from "./api.js";
import { byId, deviceHref, h, replace } from "./dom.js";
import { fillPresence, presenceBadge } from "./presence.js";

function childRow(child) {
  return h(
    "tr",
    { dataset: { child: child.id } },
    h("td", {}, h("a", { href: deviceHref(child.id), text: child.name || child.id })),
    h("td", {}, presenceBadge(child.presence)),
    h("td", { class: "reason", text: child.presence.reason || "" }),
  );
}

/**
 * Show the children of `deviceId` (the section stays hidden for a device without any) and
 * follow their presence on `live`.
 */
export async function showChildren(deviceId, live) {
  const children = await api(`/api/devices/${encodeURIComponent(deviceId)}/children`);
  byId("children-section").hidden = children.length === 0;
  replace(byId("child-rows"), children.map(childRow));
  if (!children.length) return;
  const ids = new Set(children.map((child) => child.id));
  live
    .on("presence", (message) => {
      if (!ids.has(message.device)) return;
      const row = byId("child-rows").querySelector(`tr[data-child="${CSS.escape(message.device)}"]`);
      if (!row) return;
      fillPresence(row.querySelector(".presence"), message.presence);
      row.querySelector(".reason").textContent = message.presence.reason || "";
    })
    .subscribe({ devices: [...ids], topics: ["presence"] });
}

/** "via gw-1" for a device behind a gateway, linking to the gateway's page; else null. */
export function parentLink(device) {
  if (!device.parent) return null;
  return h("a", { class: "parent", href: deviceHref(device.parent), text: `via ${device.parent}` });
}
