// Login: a name and a password give a session (HttpOnly cookie) and a CSRF token (readable
// cookie); then back to the page that sent the user here.

import { api } from "../api.js";
import { byId, say } from "../dom.js";
import { sameOriginPath } from "../redirect.js";
import { showError } from "../session.js";

/** Where to go after login: a path on this hub only (never another site; see redirect.js). */
function next() {
  return sameOriginPath(new URLSearchParams(location.search).get("next")) ?? "/";
}

async function main() {
  const form = byId("login-form");
  const status = byId("status");
  // The page's button stays disabled until this handler is in place: a form submitted before
  // would go the browser's way (the password in a plain POST, or in the address). The name
  // field has focus from the page (autofocus), not from here, so nothing typed meanwhile
  // lands in the wrong field.
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    say(status, "");
    const button = form.querySelector("button");
    button.disabled = true;
    try {
      await api("/api/auth/login", {
        method: "POST",
        login: false,
        body: { name: form.elements.name.value.trim(), password: form.elements.password.value },
      });
      location.replace(next());
    } catch (error) {
      showError(status, error); // 401 wrong name or password; 429 throttled, with how long
      form.elements.password.select();
    } finally {
      button.disabled = false;
    }
  });
  form.querySelector("button").disabled = false;
  try {
    await api("/api/auth/me", { login: false });
    location.replace(next()); // already signed in
  } catch {
    // not signed in: stay
  }
}

main();
