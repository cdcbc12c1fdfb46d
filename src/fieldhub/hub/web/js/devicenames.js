// Device names for pages that list device ids (alarms, a rule's preview): asked for by the ids
// shown, never by loading the fleet.

import { api } from "./api.js";

/**
 * The names of the devices a page shows, asked for by id (GET /api/fleet/names, at most 200
 * ids a request) and kept for the page's life. A device the caller may not see, or one
 * removed, is named by its id.
 */
export class DeviceNames {
  static CHUNK = 200; // the route's most ids a request

  constructor() {
    this.known = new Map();
  }

  /** The device's name, or its id when it has none or is not known (yet). */
  name(id) {
    return this.known.get(id) || id;
  }

  /** Learn the names of `ids` not known yet (nothing is asked when all are known). */
  async learn(ids) {
    const missing = [...new Set(ids)].filter((id) => !this.known.has(id));
    for (let start = 0; start < missing.length; start += DeviceNames.CHUNK) {
      const chunk = missing.slice(start, start + DeviceNames.CHUNK);
      const found = await api("/api/fleet/names", { query: { device: chunk } });
      for (const id of chunk) this.known.set(id, found[id] ?? "");
    }
  }
}
