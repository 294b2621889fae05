// The live feed: the WebSocket bridge at /ws/orders/{user_id} on the page's own origin.
//
// It reconnects with capped, jittered backoff and passes the last cursor it saw, so the
// bridge replays whatever happened while it was away. The page pings now and then; a socket
// that stays silent past the watchdog (no update, heartbeat or pong) is presumed dead.

const PING_EVERY_MS = 20_000;
const SILENCE_LIMIT_MS = 50_000;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_CAP_MS = 30_000;
// The bridge's close codes (gateway/closecodes.py). A bad request or a user id the token may
// not watch will not get better by retrying; a missing, invalid or expired token is
// refreshed first (a refused refresh ends the session); anything else is retried as is.
const FINAL_CLOSES = new Set([4000, 4004]);
const TOKEN_CLOSES = new Set([4001, 4002, 4003]);

export class OrderFeed {
  // onUpdate(message) for every order.update; onState(state, reason) with the state one of
  // "connecting", "live", "reconnecting" or "off" (the bridge refused for good).
  constructor({ userId, accessToken, onUpdate, onState }) {
    this.userId = userId;
    this.accessToken = accessToken;
    this.onUpdate = onUpdate;
    this.onState = onState;
    this.cursor = "";
    this.failures = 0;
    this.forceRefresh = false;
    this.socket = null;
    this.timers = [];
    this.stopped = true;
    this.connecting = false;
    this.reconnectNow = () => {
      if (!this.stopped && !this.socket && !this.connecting) this.connect();
    };
  }

  start() {
    this.stopped = false;
    window.addEventListener("online", this.reconnectNow);
    this.onState("connecting");
    this.connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener("online", this.reconnectNow);
    this.clearTimers();
    if (this.socket) {
      const socket = this.socket;
      this.socket = null;
      socket.close(1000, "signed out");
    }
  }

  clearTimers() {
    for (const timer of this.timers) clearTimeout(timer), clearInterval(timer);
    this.timers = [];
  }

  async connect() {
    this.clearTimers();
    let token;
    this.connecting = true;
    try {
      token = await this.accessToken({ force: this.forceRefresh });
      this.forceRefresh = false;
    } catch {
      if (!this.stopped) this.scheduleReconnect();
      return;
    } finally {
      this.connecting = false;
    }
    if (this.stopped) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = new URLSearchParams({ token });
    if (this.cursor) query.set("cursor", this.cursor);
    const url = `${scheme}//${location.host}/ws/orders/${encodeURIComponent(this.userId)}?${query}`;
    const socket = new WebSocket(url);
    this.socket = socket;
    let lastHeard = Date.now();

    socket.addEventListener("open", () => {
      this.onState("live");
      socket.send("ping");
      this.timers.push(
        setInterval(() => {
          if (Date.now() - lastHeard > SILENCE_LIMIT_MS) socket.close(3000, "silent");
          else if (socket.readyState === WebSocket.OPEN) socket.send("ping");
        }, PING_EVERY_MS),
      );
    });

    socket.addEventListener("message", (event) => {
      lastHeard = Date.now();
      this.failures = 0;
      const message = parse(event.data);
      if (!message) return;
      // A snapshot is a state, not a position in the feed: only other cursors resume it.
      if (message.cursor && !message.snapshot) this.cursor = String(message.cursor);
      if (message.type === "order.update") this.onUpdate(message);
    });

    socket.addEventListener("close", (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.clearTimers();
      if (this.stopped) return;
      if (FINAL_CLOSES.has(event.code)) {
        this.stopped = true;
        this.onState("off", event.reason);
        return;
      }
      this.forceRefresh = TOKEN_CLOSES.has(event.code);
      this.scheduleReconnect();
    });
  }

  scheduleReconnect() {
    this.onState("reconnecting");
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_FIRST_MS * 2 ** this.failures);
    this.failures += 1;
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.timers.push(setTimeout(() => this.connect(), delay));
  }
}

function parse(data) {
  if (typeof data !== "string") return null;
  if (data === "pong") return { type: "pong" };
  try {
    const message = JSON.parse(data);
    return message && typeof message === "object" ? message : null;
  } catch {
    return null;
  }
}
