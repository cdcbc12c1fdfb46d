// Management: add devices (credentials shown once), approve pending devices, users, API
// tokens, retention and bundle signing keys (admins), one's own tokens and password.
// Sections the user's role cannot use are not shown; the hub still checks every request, and
// its refusal is what the page says.

import { api } from "../api.js";
import { setupBundleKeys } from "../manage/bundlekeys.js";
import { setupClaims } from "../manage/claims.js";
import { offerSites, setupAddDevice } from "../manage/devices.js";
import { setupPassword } from "../manage/password.js";
import { setupRetention } from "../manage/retention.js";
import { setupTokens } from "../manage/tokens.js";
import { setupUsers } from "../manage/users.js";
import { byId } from "../dom.js";
import { Permission, showError, startPage } from "../session.js";

async function knownSites(me) {
  if (me.user.role !== "admin") return new Set(me.user.sites);
  const summary = await api("/api/fleet/summary"); // the fleet's sites, counted by the hub
  return new Set(Object.keys(summary.sites).filter(Boolean));
}

async function main() {
  const { me, live } = await startPage("manage");
  live.start(); // the navigation's alarm count stays current

  for (const el of document.querySelectorAll("[data-needs]")) {
    el.hidden = !me.can(el.dataset.needs);
  }
  const work = [setupTokens()];
  setupPassword(me);
  if (me.can(Permission.DEVICES_WRITE)) {
    setupAddDevice(me);
    work.push(knownSites(me).then(offerSites));
  }
  if (me.can(Permission.DEVICES_READ)) work.push(setupClaims(me.can(Permission.DEVICES_WRITE)));
  if (me.can(Permission.USERS_READ)) work.push(setupUsers(me));
  if (me.can(Permission.HUB_READ)) work.push(setupRetention());
  if (me.can(Permission.HUB_READ)) work.push(setupBundleKeys(me.can(Permission.BUNDLES_WRITE)));
  await Promise.all(work);
  if (location.hash) document.getElementById(location.hash.slice(1))?.scrollIntoView();
}

main().catch((error) => showError(byId("tokens-status"), error));
