// A device field for a fleet of any size: as the user types, the hub searches its devices
// (GET /api/devices?q=…&limit=20, the caller's sites only) and the matches are offered in a
// list under the field; picking one puts the device's id in the field. Nothing loads the
// whole fleet: a page of 10,000 devices costs one small request per pause in typing.
//
// An ARIA combobox (input + listbox): arrows move through the matches, Enter picks, Escape
// closes; a polite status says how many match. With `several`, the field holds a comma
// separated list and the picker completes its last item.

import { apiPage } from "./api.js";
import { h, replace } from "./dom.js";

const SHOWN = 20;
const PAUSE_MS = 200;
let made = 0; // for ids unique on the page

export class DevicePicker {
  /**
   * Turn `input` (inside its `<label>`) into a device picker.
   * @param {HTMLInputElement} input
   * @param {{several?: boolean}} options
   */
  constructor(input, options = {}) {
    this.input = input;
    this.several = options.several ?? false;
    this.matches = [];
    this.active = -1;
    this.timer = null;
    this.request = null;
    const id = `device-picker-${++made}`;
    this.list = h("ul", { role: "listbox", id, class: "picker-list" });
    this.status = h("p", { class: "picker-status", role: "status" });
    this.popup = h("div", { class: "picker-popup", hidden: true }, this.list, this.status);
    const label = input.closest("label") ?? input;
    const box = h("span", { class: "picker" });
    label.replaceWith(box);
    box.append(label, this.popup);
    for (const [name, value] of Object.entries({
      role: "combobox",
      "aria-autocomplete": "list",
      "aria-expanded": "false",
      "aria-controls": id,
      autocomplete: "off",
    })) {
      input.setAttribute(name, value);
    }
    input.removeAttribute("list");
    input.addEventListener("input", () => (this.term() ? this.soon() : this.close()));
    input.addEventListener("keydown", (event) => this.key(event));
    input.addEventListener("blur", () => this.close());
  }

  /** The item being typed: the whole field, or with `several` its last comma-separated part. */
  term() {
    const text = this.input.value;
    return (this.several ? text.slice(text.lastIndexOf(",") + 1) : text).trim();
  }

  /** Search after a pause in typing (one request per pause, the previous one abandoned); an
   * emptied field (no device: "any") closes the list, arrow down opens it on the first ones. */
  soon() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.search(), PAUSE_MS);
  }

  async search() {
    this.request?.abort();
    const request = new AbortController();
    this.request = request;
    const query = { q: this.term(), limit: SHOWN, sort: "name" };
    try {
      const { items, total } = await apiPage("/api/devices", { query, signal: request.signal });
      this.show(items, total);
    } catch (error) {
      if (error.name === "AbortError") return;
      this.show([], 0);
      this.status.textContent = `search failed: ${error.message}`;
    }
  }

  show(devices, total) {
    this.matches = devices;
    this.active = -1;
    this.list.hidden = !devices.length;
    replace(
      this.list,
      devices.map((device, i) =>
        h(
          "li",
          {
            role: "option",
            id: `${this.list.id}-${i}`,
            "aria-selected": "false",
            onmousedown: (event) => {
              event.preventDefault(); // the field keeps the focus
              this.pick(device);
            },
          },
          device.name || device.id,
          device.name ? h("span", { class: "id", text: ` ${device.id}` }) : null,
        ),
      ),
    );
    const more = total > devices.length ? `, the first ${devices.length} shown: type more` : "";
    const count = total === 1 ? "1 device matches" : `${total.toLocaleString("en")} devices match`;
    this.status.textContent = count + more;
    this.open(document.activeElement === this.input);
  }

  /** Show the matches (or that none matched) under the field, or hide them. */
  open(on) {
    this.popup.hidden = !on;
    const expanded = on && this.matches.length > 0;
    this.input.setAttribute("aria-expanded", String(expanded));
    if (!expanded) this.input.removeAttribute("aria-activedescendant");
  }

  close() {
    clearTimeout(this.timer);
    this.request?.abort();
    this.open(false);
  }

  key(event) {
    const shown = this.input.getAttribute("aria-expanded") === "true";
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      if (!shown) return void this.search();
      const step = event.key === "ArrowDown" ? 1 : -1;
      this.highlight((this.active + step + this.matches.length) % this.matches.length);
    } else if (event.key === "Enter" && shown && this.active >= 0) {
      event.preventDefault(); // picks; the form is not sent
      this.pick(this.matches[this.active]);
    } else if (event.key === "Escape" && !this.popup.hidden) {
      event.preventDefault();
      this.close();
    }
  }

  highlight(index) {
    this.active = index;
    for (const [i, option] of [...this.list.children].entries()) {
      option.setAttribute("aria-selected", String(i === index));
    }
    const option = this.list.children[index];
    this.input.setAttribute("aria-activedescendant", option.id);
    option.scrollIntoView({ block: "nearest" });
  }

  /** Put the device's id in the field and tell the form (a `change`, as typing would). */
  pick(device) {
    const text = this.input.value;
    const kept = this.several && text.includes(",") ? `${text.slice(0, text.lastIndexOf(",") + 1)} ` : "";
    this.input.value = kept + device.id;
    this.close();
    this.input.dispatchEvent(new Event("change", { bubbles: true }));
  }
}
