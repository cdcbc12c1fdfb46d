// Change one's own password (the current one as proof); the user's other sessions end.

import { api } from "../api.js";
import { byId, say } from "../dom.js";
import { showError } from "../session.js";

export function setupPassword(me) {
  const form = byId("password-form");
  const status = byId("password-status");
  form.elements.username.value = me.user.name; // for password managers
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    say(status, "");
    if (form.elements.new.value !== form.elements.again.value) {
      say(status, "The two new passwords differ.", "error");
      return;
    }
    try {
      await api("/api/auth/password", {
        method: "PUT",
        body: { current_password: form.elements.current.value, new_password: form.elements.new.value },
      });
      form.reset();
      say(status, "Password changed. Your other sessions have ended.", "ok");
    } catch (error) {
      showError(status, error);
    }
  });
}
