// Retention (admins): the policy as a form, the disk budget as the last sweep read it. Events
// by type are "type=days" pairs; raw-sample overrides one a line, "glob [label=value ...] days",
// first match wins. A 422 lands next to the field it names (overrides.0.key: the textarea).

import { api } from "../api.js";
import { byId, say } from "../dom.js";
import { clearFieldErrors, showFieldErrors } from "../fielderrors.js";

const NUMBERS = [
  "raw_days",
  "minute_days",
  "hour_days",
  "day_days",
  "events_days",
  "alarms_days",
  "budget_mb",
];

const typesText = (types) => Object.entries(types).map(([t, d]) => `${t}=${d}`).join(", ");

const overridesText = (overrides) =>
  overrides
    .map((o) => [o.key, ...Object.entries(o.labels).map(([k, v]) => `${k}=${v}`), o.days].join(" "))
    .join("\n");

function parseTypes(text) {
  const types = {};
  for (const pair of text.split(",").map((p) => p.trim()).filter(Boolean)) {
    const [type, days] = pair.split("=");
    types[type.trim()] = Number(days); // NaN is sent as null: the hub names the type
  }
  return types;
}

function parseOverrides(text) {
  return text
    .split("\n")
    .map((line) => line.trim().split(/\s+/).filter(Boolean))
    .filter((words) => words.length)
    .map((words) => {
      const labels = {};
      for (const word of words.slice(1, -1)) {
        const [name, value] = word.split("=");
        labels[name] = value ?? "";
      }
      return { key: words[0], labels, days: Number(words.at(-1)) };
    });
}

function show(form, answer) {
  const { policy, budget, removed } = answer;
  for (const name of NUMBERS) form.elements[name].value = policy[name];
  form.elements.event_types.value = typesText(policy.event_types);
  form.elements.overrides.value = overridesText(policy.overrides);
  const gone = Object.entries(removed).map(([kind, n]) => `${n} ${kind}`).join(", ") || "nothing yet";
  byId("retention-budget").textContent = budget
    ? `${budget.used_pct} % of the ${budget.of} budget in use (${Math.round(budget.used_bytes / 2 ** 20)} of ${Math.round(budget.budget_bytes / 2 ** 20)} MiB); removed since start: ${gone}.`
    : `Not measured yet; removed: ${gone}.`;
}

export async function setupRetention() {
  const form = byId("retention-form");
  const status = byId("retention-status");
  show(form, await api("/api/retention"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    say(status, "");
    clearFieldErrors(form);
    const body = {
      ...Object.fromEntries(NUMBERS.map((name) => [name, Number(form.elements[name].value)])),
      event_types: parseTypes(form.elements.event_types.value),
      overrides: parseOverrides(form.elements.overrides.value),
    };
    try {
      show(form, await api("/api/retention", { method: "PUT", body }));
      say(status, "Retention saved.", "ok");
    } catch (error) {
      showFieldErrors(form, status, error);
    }
  });
}
