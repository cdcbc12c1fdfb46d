// Who is signed in, what they may do, and the page frame every page shares: navigation,
// the user's name, log out, and the live feed's state.

import { AlarmCounts } from "./alarmcount.js";
import { keepAgesCurrent } from "./ages.js";
import { api, ApiError } from "./api.js";
import { byId, say } from "./dom.js";
import { LiveFeed } from "./live.js";

/** Permissions as the API names them (GET /api/auth/me → permissions). */
export const Permission = Object.freeze({
  DEVICES_READ: "devices:read",
  DEVICES_WRITE: "devices:write",
  DEVICES_COMMAND: "devices:command",
  EVENTS_READ: "events:read",
  ALARMS_READ: "alarms:read",
  ALARMS_WRITE: "alarms:write",
  USERS_READ: "users:read",
  USERS_WRITE: "users:write",
  ACCOUNT_WRITE: "account:write",
  HUB_READ: "hub:read",
  BUNDLES_WRITE: "bundles:write",
});

/** The signed-in user: `{user, permissions, can(permission)}`. */
export class Me {
  constructor(answer) {
    this.user = answer.user;
    this.permissions = new Set(answer.permissions);
  }

  can(permission) {
    return this.permissions.has(permission);
  }
}

const LIVE_TEXT = { connecting: "connecting…", live: "live", offline: "offline, retrying" };

/**
 * Set up the page frame: find out who is signed in (a 401 goes to the login page), show the
 * user and the log-out button, mark the current page in the navigation, keep the page's
 * relative ages current, count the open alarms in the navigation (kept current by the feed),
 * and start the live feed (not connected until the page subscribes and calls `live.start()`).
 *
 * @param {string} current the data-nav name of this page
 * @returns {Promise<{me: Me, live: LiveFeed, alarms: AlarmCounts}>}
 */
export async function startPage(current) {
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === current) link.setAttribute("aria-current", "page");
  }
  const me = new Me(await api("/api/auth/me"));
  const who = byId("who");
  who.textContent = me.user.name;
  who.title = `${me.user.role}${me.user.sites.length ? ` · sites: ${me.user.sites.join(", ")}` : ""}`;
  byId("role").textContent = me.user.role;
  byId("logout").addEventListener("click", logout);
  const indicator = byId("live-state");
  indicator.hidden = true; // until the page starts its feed
  const live = new LiveFeed((state) => {
    indicator.hidden = false;
    indicator.dataset.state = state;
    indicator.textContent = LIVE_TEXT[state];
    indicator.title = state === "live" ? "updates arrive as they happen" : "updates paused";
  });
  const alarms = new AlarmCounts(me.can(Permission.ALARMS_READ), live);
  keepAgesCurrent();
  document.body.classList.add("ready");
  return { me, live, alarms };
}

async function logout() {
  try {
    await api("/api/auth/logout", { method: "POST", login: false });
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
  }
  location.assign("/login");
}

/** Report a failure in `el` with the server's own message (its 403 says who may not what). */
export function showError(el, error) {
  if (error instanceof ApiError) {
    say(el, error.status ? `${error.message} (${error.status})` : error.message, "error");
  } else {
    say(el, String(error?.message ?? error), "error");
    console.error(error);
  }
}
