// The live feed: the hub's WebSocket /api/live (docs/live.md), reconnecting by itself.
// A refused handshake shows here as a close (1006) without an open; then GET /api/auth/me
// tells whether the session is over (its 401 leads to the login page) or the hub is away.
//
// A page says what it wants to hear (`subscribe`) and what to do with each kind of message
// (`on`). The subscriptions are sent again after every reconnection, and "resync" handlers
// run then (and when the hub reports dropped messages) so a page can fetch what it missed:
// the feed carries changes, the REST API the truth.

import { api } from "./api.js";

const PING_MS = 25_000;
const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 30_000;
const CLOSE_UNAUTHENTICATED = 4401;

export class LiveFeed {
  /** @param {(state: "connecting"|"live"|"offline") => void} onState */
  constructor(onState = () => {}) {
    this.onState = onState;
    this.handlers = new Map();
    this.requests = [];
    this.socket = null;
    this.retryMs = RETRY_MIN_MS;
    this.pinger = null;
    this.connectedOnce = false;
    this.stopped = false;
  }

  /** Call `handler(message)` for every message of `type` (also "resync"). */
  on(type, handler) {
    if (!this.handlers.has(type)) this.handlers.set(type, []);
    this.handlers.get(type).push(handler);
    return this;
  }

  /** Ask for messages: `{devices: [...]}`, `{labels: {...}}` or `{all: true}`, optional `topics`. */
  subscribe(request) {
    this.requests.push(request);
    this.send({ op: "subscribe", ...request });
    return this;
  }

  start() {
    this.stopped = false;
    this.open();
    return this;
  }

  stop() {
    this.stopped = true;
    clearInterval(this.pinger);
    this.socket?.close(1000);
  }

  send(message) {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  }

  emit(type, message) {
    for (const handler of this.handlers.get(type) ?? []) {
      try {
        handler(message);
      } catch (error) {
        console.error(`live ${type} handler failed`, error);
      }
    }
  }

  open() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    this.onState("connecting");
    let socket;
    try {
      // frames=array: whatever waits for this page comes as one message (one per commit of
      // the hub, usually), not one message per frame: far less work for a busy fleet.
      socket = new WebSocket(`${scheme}://${location.host}/api/live?frames=array`);
    } catch {
      this.retry();
      return;
    }
    this.socket = socket;
    let opened = false;
    socket.addEventListener("open", () => {
      opened = true;
      this.retryMs = RETRY_MIN_MS;
      this.onState("live");
      for (const request of this.requests) this.send({ op: "subscribe", ...request });
      clearInterval(this.pinger);
      this.pinger = setInterval(() => this.send({ op: "ping" }), PING_MS);
      if (this.connectedOnce) this.emit("resync", { reason: "reconnected" });
      this.connectedOnce = true;
    });
    socket.addEventListener("message", (event) => {
      let frames;
      try {
        frames = JSON.parse(event.data);
      } catch {
        return;
      }
      for (const frame of Array.isArray(frames) ? frames : [frames]) this.dispatch(frame);
    });
    socket.addEventListener("close", (event) => {
      clearInterval(this.pinger);
      if (this.socket !== socket || this.stopped) return;
      this.onState("offline");
      if (event.code === CLOSE_UNAUTHENTICATED || !opened) {
        // Refused: if the session ended, this call sends the browser to the login page.
        api("/api/auth/me").catch(() => {});
      }
      this.retry();
    });
  }

  dispatch(frame) {
    if (!frame || typeof frame.type !== "string") return;
    if (frame.type === "dropped") {
      // Frames were lost while this page read too slowly: fetch again what matters.
      this.emit("resync", { reason: "dropped", count: frame.count });
      return;
    }
    if (frame.type === "error") console.warn("live feed:", frame.message);
    this.emit(frame.type, frame);
  }

  retry() {
    if (this.stopped) return;
    const wait = this.retryMs * (0.5 + Math.random());
    this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
    setTimeout(() => {
      if (!this.stopped) this.open();
    }, wait);
  }
}
