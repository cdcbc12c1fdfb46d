// What a device reports, told apart: its units' states, and the keys the protocol reserves.
//
// Beside its units' states a device reports keys of the protocol's own
// (docs/protocol.md, "desired state"): `actions` (its action catalog), `action_details` (the
// catalog's durations, defaults and ranges), `desired_version` (the
// desired version it applied) and `desired_errors` (desired keys it refused, and why). They are
// shown where they mean something -- the command buttons, in sync or not, a problem -- and
// never as if they were a unit's state.

export const ACTIONS = "actions";
export const ACTION_DETAILS = "action_details";
export const DESIRED_VERSION = "desired_version";
export const DESIRED_ERRORS = "desired_errors";

const RESERVED = new Set([ACTIONS, ACTION_DETAILS, DESIRED_VERSION, DESIRED_ERRORS]);

/** Whether `key` of a reported or desired state is the protocol's rather than a unit's. */
export function isReserved(key) {
  return RESERVED.has(key);
}

/** The units' states of a reported state: `[key, value]` pairs, reserved keys left out. */
export function unitStates(reported) {
  return Object.entries(reported ?? {}).filter(([key]) => !RESERVED.has(key));
}
