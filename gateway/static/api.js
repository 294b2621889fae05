// The REST API behind Envoy, on the page's own origin, and the session's tokens.
//
// Tokens live in sessionStorage (this tab only, gone when it closes). The access token is
// refreshed shortly before it expires, and once more if the API still answers 401; refresh
// tokens rotate and a reused one revokes its family, so only one refresh runs at a time.

const SESSION_KEY = "ordermesh.session";
const REFRESH_MARGIN_MS = 30_000;

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.body = body;
  }
}

export class SessionEnded extends ApiError {}

// The google.rpc.Status body's message, plus what each field violation says.
function errorMessage(status, body, text) {
  if (body && typeof body.message === "string" && body.message) {
    const violations = (body.details || [])
      .flatMap((detail) => detail.field_violations || detail.fieldViolations || [])
      .map((v) => v.description)
      .filter((description) => description && !body.message.includes(description));
    return [body.message, ...violations].join("; ");
  }
  if (text && text.length < 300) return text.trim();
  if (status === 429) return "Too many requests: wait a moment and try again.";
  if (status >= 500) return `The server could not answer (HTTP ${status}). Try again shortly.`;
  return `The request failed (HTTP ${status}).`;
}

async function send(method, path, { body, headers = {} } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, "Cannot reach the server. Check the connection and try again.");
  }
  const text = await response.text();
  let parsed;
  try {
    parsed = text ? JSON.parse(text) : {};
  } catch {
    parsed = undefined;
  }
  if (!response.ok) {
    throw new ApiError(response.status, errorMessage(response.status, parsed, text), parsed);
  }
  if (parsed === undefined) throw new ApiError(response.status, "The server sent an unreadable answer.");
  return parsed;
}

export class Session {
  constructor(onEnded) {
    this.onEnded = onEnded;
    this.refreshing = null;
    try {
      this.state = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    } catch {
      this.state = null;
    }
  }

  get user() {
    return this.state ? this.state.user : null;
  }

  get signedIn() {
    return Boolean(this.state && this.state.refresh_token && this.state.user);
  }

  save(state) {
    this.state = state;
    if (state) sessionStorage.setItem(SESSION_KEY, JSON.stringify(state));
    else sessionStorage.removeItem(SESSION_KEY);
  }

  static tokensFrom(answer) {
    return {
      access_token: answer.access_token,
      refresh_token: answer.refresh_token,
      expires_at: Date.now() + Number(answer.expires_in || 0) * 1000,
    };
  }

  async register(fields) {
    return send("POST", "/api/v1/auth/register", { body: fields });
  }

  async login(email, password) {
    const tokens = Session.tokensFrom(
      await send("POST", "/api/v1/auth/login", { body: { email, password } }),
    );
    const me = await send("GET", "/api/v1/auth/me", {
      headers: { Authorization: `Bearer ${tokens.access_token}` },
    });
    this.save({ ...tokens, user: { user_id: me.user_id, email: me.email, full_name: me.full_name } });
    return this.user;
  }

  async logout() {
    const token = this.state && this.state.refresh_token;
    this.save(null);
    if (token) {
      try {
        await send("POST", "/api/v1/auth/logout", { body: { refresh_token: token } });
      } catch {
        // Signed out here either way; an expired or revoked token has nothing left to revoke.
      }
    }
  }

  // A current access token, refreshed first if it expires within the margin (or if forced).
  async accessToken({ force = false } = {}) {
    if (!this.signedIn) throw new SessionEnded(401, "You are signed out.");
    if (!force && this.state.expires_at - REFRESH_MARGIN_MS > Date.now()) {
      return this.state.access_token;
    }
    if (!this.refreshing) {
      this.refreshing = this.refresh().finally(() => {
        this.refreshing = null;
      });
    }
    return this.refreshing;
  }

  async refresh() {
    const spent = this.state.refresh_token;
    try {
      const answer = await send("POST", "/api/v1/auth/refresh", { body: { refresh_token: spent } });
      this.save({ ...this.state, ...Session.tokensFrom(answer) });
      return this.state.access_token;
    } catch (error) {
      if (error.status === 401 || error.status === 400) {
        this.save(null);
        const ended = new SessionEnded(401, "Your session has ended: please log in again.");
        this.onEnded(ended);
        throw ended;
      }
      throw error;
    }
  }

  // An authenticated call; a 401 refreshes the token once and tries again.
  async call(method, path, options = {}) {
    const attempt = async (force) => {
      const token = await this.accessToken({ force });
      return send(method, path, {
        ...options,
        headers: { ...(options.headers || {}), Authorization: `Bearer ${token}` },
      });
    };
    try {
      return await attempt(false);
    } catch (error) {
      if (error.status !== 401 || error instanceof SessionEnded) throw error;
      return attempt(true);
    }
  }
}

export async function listProducts() {
  const products = [];
  for (let page = 1; page <= 20; page += 1) {
    const answer = await send("GET", `/api/v1/products?page=${page}&page_size=100`);
    products.push(...(answer.products || []));
    if (!answer.has_next) break;
  }
  return products;
}
