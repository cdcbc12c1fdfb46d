// Alarm rules: the rules the user sees (those reaching devices of their sites), and for users
// who may write rules (operators, admins) a form to make and change them, with a preview of
// what the form's rule would have raised over stored history before anything is saved. The
// hub checks every rule; its 422s are shown at the fields they name.

import { api } from "../api.js";
import { DeviceNames } from "../devicenames.js";
import { DevicePicker } from "../devicepicker.js";
import { byId, say } from "../dom.js";
import { clearFieldErrors, showFieldErrors } from "../fielderrors.js";
import { RuleForm } from "../ruleform.js";
import { showPreview } from "../rulepreview.js";
import { showRules } from "../rulerows.js";
import { Permission, showError, startPage } from "../session.js";

const status = byId("status");
const formStatus = byId("form-status");
const result = byId("preview-result");
const form = byId("rule-form");
const heading = byId("h-editor");
const names = new DeviceNames(); // of the devices a preview shows
let editor;
let canWrite = false;

async function loadRules() {
  const rules = await api("/api/alarm-rules");
  showRules(byId("rule-rows"), rules, { canWrite, edit, enable, remove });
  byId("no-rules").hidden = rules.length > 0;
}

function startOver() {
  editor.clear();
  clearFieldErrors(form);
  say(formStatus, "");
  result.replaceChildren();
  heading.textContent = "New rule";
}

function edit(rule) {
  startOver();
  editor.fill(rule);
  heading.textContent = `Edit rule ${rule.id}`;
  byId("editor").scrollIntoView({ block: "start" });
  form.elements.namedItem("name").focus();
}

/** Enable or disable a rule: the stored rule sent back whole with `enabled` changed. */
async function enable(rule, on) {
  const { id, created_at: _c, updated_at: _u, updated_by: _b, ...body } = rule;
  try {
    await api(`/api/alarm-rules/${encodeURIComponent(id)}`, { method: "PUT", body: { ...body, enabled: on } });
    say(status, `Rule ${id} ${on ? "enabled" : "disabled"}.`, "ok");
    await loadRules();
  } catch (error) {
    showError(status, error);
  }
}

async function remove(rule) {
  try {
    await api(`/api/alarm-rules/${encodeURIComponent(rule.id)}`, { method: "DELETE" });
    say(status, `Rule ${rule.id} deleted; its open alarms were cleared.`, "ok");
    if (editor.editing === rule.id) startOver();
    await loadRules();
  } catch (error) {
    showError(status, error);
  }
}

/** Run `work` with the form's buttons disabled, its errors shown at their fields. */
async function busy(work) {
  const buttons = [...form.querySelectorAll("button")];
  for (const b of buttons) b.disabled = true;
  clearFieldErrors(form);
  say(formStatus, "");
  try {
    await work();
  } catch (error) {
    showFieldErrors(form, formStatus, error);
  } finally {
    for (const b of buttons) b.disabled = false;
  }
}

function save() {
  return busy(async () => {
    const body = editor.read();
    const saved = editor.editing
      ? await api(`/api/alarm-rules/${encodeURIComponent(editor.editing)}`, { method: "PUT", body })
      : await api("/api/alarm-rules", { method: "POST", body });
    await loadRules();
    editor.fill(saved);
    heading.textContent = `Edit rule ${saved.id}`;
    say(formStatus, `Rule ${saved.id} saved.`, "ok");
  });
}

function preview() {
  return busy(async () => {
    const hours = form.elements.namedItem("hours").value;
    const answer = await api("/api/alarm-rules/preview", {
      method: "POST",
      query: { hours },
      body: editor.read(),
    });
    await names.learn(answer.alarms.map((a) => a.device_id));
    showPreview(result, answer, (id) => names.name(id));
  });
}

async function main() {
  const { me, live } = await startPage("rules");
  live.start(); // the navigation's alarm count stays current
  canWrite = me.can(Permission.ALARMS_WRITE);
  byId("read-only").hidden = canWrite;
  byId("editor").hidden = !canWrite;
  const work = [loadRules()];
  if (canWrite) {
    editor = new RuleForm(form);
    new DevicePicker(form.elements.namedItem("target.devices"), { several: true });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      save();
    });
    byId("preview").addEventListener("click", preview);
    byId("new-rule").addEventListener("click", startOver);
    work.push(api("/api/escalation-policies").then((p) => editor.setPolicies(p)));
  }
  await Promise.all(work);
}

main().catch((error) => showError(status, error));
