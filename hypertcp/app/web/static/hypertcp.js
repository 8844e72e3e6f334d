/**
 * HyperTCP for the browser: one ES module, no build step, no dependencies.
 *
 *   import { HyperTCPClient, gatewayUrl } from "/hypertcp.js";
 *   const client = new HyperTCPClient(gatewayUrl(), { token, deviceId: "panel-1" });
 *   client.onMessage((message) => console.log(message.from, message.payload));
 *   await client.connect();                       // resolves once logged in
 *   const answer = await client.send("lamp-1", { on: true });
 *   if (!answer.ok) console.warn(answer.name, answer.reason);
 *
 * The JSON it speaks over the WebSocket is documented in docs/protocol.rst
 * ("WebSocket").  It logs in again by itself after the connection drops,
 * waiting longer after each failure (exponential backoff with jitter).
 */

/** RESPONSE statuses, as the server names them. */
export const Status = Object.freeze({
  SUCCESS: 200, STORED: 202, QUOTA_LIMIT: 1, ILLEGAL_COMMAND: 2, NOT_AUTHENTICATED: 5,
  NOT_ALLOWED: 6, DEVICE_NOT_IN_NETWORK: 7, INVALID_TOKEN: 9, ILLEGAL_COMMAND_BODY: 11,
  TIMEOUT: 16, SERVER_EXCEPTION: 19,
});

/** The gateway of the server that served this page (ws: or wss: as the page's scheme). */
export function gatewayUrl(base = globalThis.location) {
  const url = new URL("/ws", base);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

/** A refusal or a lost connection, with the server's status when there is one. */
export class HyperTCPError extends Error {
  constructor(message, answer = null) {
    super(message);
    this.name = "HyperTCPError";
    this.answer = answer;
  }
}

export class HyperTCPClient {
  /**
   * @param {string} url  the gateway, e.g. gatewayUrl() or "wss://host:8081/ws"
   * @param {object} options
   *   token       a HyperTCP token (required)
   *   deviceId    the id to log in as (fleet and observer tokens); default: the token's or one the server assigns
   *   challenge   log in by challenge: the token never crosses the wire, an HMAC proof does
   *               (needs Web Crypto: an https page, or one from localhost); default false
   *   reconnect   log in again after the connection drops (default true)
   *   minDelay, maxDelay   backoff bounds in ms (default 500, 30000)
   *   timeout     ms to wait for an answer before giving up on it (default 30000)
   *   WebSocket   the WebSocket class to use (default: the browser's)
   */
  constructor(url, options = {}) {
    if (!options.token) throw new TypeError("a token is required");
    this.url = url;
    this.token = options.token;
    this.wantedId = options.deviceId ?? null;
    this.challenge = options.challenge ?? false;
    this.reconnect = options.reconnect ?? true;
    this.minDelay = options.minDelay ?? 500;
    this.maxDelay = options.maxDelay ?? 30000;
    this.timeout = options.timeout ?? 30000;
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this.deviceId = null;
    this.role = null;
    this.online = false;
    this._socket = null;
    this._nextId = 1;
    this._pending = new Map();
    this._handlers = { message: new Set(), state: new Set(), error: new Set() };
    this._attempt = 0;
    this._timer = null;
    this._closed = false;
    this._login = null;
  }

  /** Call handler(message) for each message, broadcast and presence event; returns an unsubscribe function.
   *  message: {type: "message"|"broadcast", from, payload, to?}.  Each is acknowledged once every
   *  handler has returned (or its promise settled); a handler may return a status number to ack with. */
  onMessage(handler) { return this._on("message", handler); }

  /** Call handler(state, detail) as the connection goes "connecting", "online", "offline" or "closed". */
  onState(handler) { return this._on("state", handler); }

  /** Call handler(error) for what the server refuses without an id to answer: {status, name, error}. */
  onError(handler) { return this._on("error", handler); }

  /** Open the connection and log in; resolves with the login's answer ({deviceId, role, ...}). */
  connect() {
    this._closed = false;
    clearTimeout(this._timer);
    if (this._login) return this._login.promise;
    this._login = deferred();
    this._open();
    return this._login.promise;
  }

  /** Send payload (an object) to targetId; resolves with the server's answer {ok, status, name, reason}.
   *  With {ack: true} the answer waits for the receiver's acknowledgement.  With {qos: 1} a target
   *  that is offline gets it when it next logs in (answered STORED, 202; ok is true), kept
   *  {ttl} seconds at most (default: the server's). */
  send(targetId, payload, { ack = false, qos = 0, ttl } = {}) {
    const action = { action: "send", targetId, payload };
    if (ack) action.ack = true;
    if (qos) action.qos = qos;
    if (ttl !== undefined) action.ttl = ttl;
    return this._request(action);
  }

  /** Send payload to every other connection. */
  broadcast(payload) { return this._request({ action: "broadcast", payload }); }

  /** Run a server command: {command: name, ...fields} to "server" (its reply arrives through onMessage). */
  command(name, fields = {}) { return this.send("server", { ...fields, command: name }); }

  /** Ask the server for an answer; resolves with it. */
  ping() { return this._request({ action: "ping" }); }

  /** Close for good: no reconnecting; what waits for an answer fails. */
  close() {
    this._closed = true;
    clearTimeout(this._timer);
    if (this._socket) this._socket.close(1000, "closed by the client");
    this._settle(new HyperTCPError("closed by the client"));
    this._setState("closed");
  }

  // -- internals --

  _on(kind, handler) {
    this._handlers[kind].add(handler);
    return () => this._handlers[kind].delete(handler);
  }

  _emit(kind, ...args) {
    for (const handler of this._handlers[kind]) {
      try { handler(...args); } catch (error) { console.error("HyperTCP handler failed", error); }
    }
  }

  _setState(state, detail = null) { this._emit("state", state, detail); }

  _open() {
    this._setState("connecting", { attempt: this._attempt });
    const socket = new this.WebSocket(this.url);
    this._socket = socket;
    this._nextId = 1;
    socket.onopen = () => {
      this._logIn().then((answer) => this._loggedIn(answer), (error) => {
        if (!(error instanceof HyperTCPError)) console.error("HyperTCP login failed", error);
      });
    };
    socket.onmessage = (event) => this._received(event.data);
    socket.onclose = (event) => this._lost(socket, event);
  }

  async _logIn() {
    const named = this.wantedId ? { device_id: this.wantedId } : {};
    if (!this.challenge) return this._ask({ action: "login", token: this.token, ...named });
    const challenge = await this._ask({ action: "login", challenge: true });
    if (challenge.type !== "challenge") return challenge;  // refused
    const { key, proof } = await challengeProof(this.token, challenge.nonce, this.wantedId);
    return this._ask({ action: "login", key, proof, ...named });
  }

  _ask(action) {
    action.id = this._nextId++;
    const answer = this._expect(action.id);
    this._socket.send(JSON.stringify(action));
    return answer;
  }

  _loggedIn(answer) {
    const login = this._login;
    if (answer.ok) {
      this.deviceId = answer.deviceId;
      this.role = answer.role;
      this.online = true;
      this._attempt = 0;
      this._setState("online", answer);
      if (login) { this._login = null; login.resolve(answer); }
      return;
    }
    // A refused login is final: trying the same token again would be refused again.
    this._closed = true;
    if (login) { this._login = null; login.reject(new HyperTCPError(`login refused: ${answer.name}: ${answer.reason}`, answer)); }
    this._socket.close(1000, "login refused");
  }

  _lost(socket, event) {
    if (socket !== this._socket) return;
    this._socket = null;
    this.online = false;
    this._settle(new HyperTCPError(`connection closed (${event.code}${event.reason ? ": " + event.reason : ""})`));
    if (this._closed || !this.reconnect) {
      if (this._login) { this._login.reject(new HyperTCPError("connection closed before login")); this._login = null; }
      this._setState("closed", { code: event.code, reason: event.reason });
      return;
    }
    const ceiling = Math.min(this.maxDelay, this.minDelay * 2 ** this._attempt);
    const delay = Math.round(ceiling / 2 + Math.random() * ceiling / 2);
    this._attempt += 1;
    this._setState("offline", { code: event.code, reason: event.reason, retryIn: delay });
    this._timer = setTimeout(() => this._open(), delay);
  }

  _request(action) {
    if (!this.online || !this._socket) {
      return Promise.reject(new HyperTCPError("not connected"));
    }
    return this._ask(action);
  }

  _expect(id) {
    const waiting = deferred();
    waiting.timer = setTimeout(() => {
      this._pending.delete(id);
      waiting.reject(new HyperTCPError(`no answer within ${this.timeout} ms`));
    }, this.timeout);
    this._pending.set(id, waiting);
    return waiting.promise;
  }

  _settle(error) {
    for (const waiting of this._pending.values()) {
      clearTimeout(waiting.timer);
      waiting.reject(error);
    }
    this._pending.clear();
  }

  _received(text) {
    let message;
    try { message = JSON.parse(text); } catch { return; }
    if (message.type === "status" || message.type === "challenge") {
      const waiting = this._pending.get(message.id);
      if (message.id === null || !waiting) {
        if (message.status !== Status.SUCCESS) this._emit("error", message);
        return;
      }
      this._pending.delete(message.id);
      clearTimeout(waiting.timer);
      message.ok = message.status === Status.SUCCESS || message.status === Status.STORED;
      waiting.resolve(message);
    } else if (message.type === "message" || message.type === "broadcast") {
      this._deliver(message);
    } else if (message.type === "redirect") {
      this._ack(message.ref, Status.SUCCESS);  // the server closes next; reconnecting follows
    } else if (message.type === "error") {
      this._emit("error", message);
    }
  }

  async _deliver(message) {
    const ref = message.ref;
    let status = Status.SUCCESS;
    for (const handler of this._handlers.message) {
      try {
        const result = await handler(message);
        if (Number.isInteger(result)) status = result;
      } catch (error) {
        console.error("HyperTCP message handler failed", error);
        status = Status.SERVER_EXCEPTION;
      }
    }
    this._ack(ref, status);
  }

  _ack(ref, status) {
    if (ref === undefined || !this._socket || this._socket.readyState !== 1) return;
    const ack = { action: "ack", ref };
    if (status !== Status.SUCCESS) ack.status = status;
    this._socket.send(JSON.stringify(ack));
  }
}

/**
 * The answer to a challenge (docs/protocol.rst, hypertcp/protocol/challenge.py):
 * key = SHA-256(token)[:8] in hex; proof = ClientKey XOR HMAC(SHA-256(ClientKey), "nonce:id"),
 * where ClientKey = HMAC-SHA256(token, "HyperTCP client key").
 */
export async function challengeProof(token, nonce, deviceId = null) {
  const text = new TextEncoder();
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) throw new HyperTCPError("a challenge login needs Web Crypto (an https page, or localhost)");
  const hmac = async (key, data) => new Uint8Array(await subtle.sign(
    "HMAC", await subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]), data));
  const clientKey = await hmac(text.encode(token), text.encode("HyperTCP client key"));
  const storedKey = new Uint8Array(await subtle.digest("SHA-256", clientKey));
  const signature = await hmac(storedKey, text.encode(`${nonce}:${deviceId ?? ""}`));
  const keyId = new Uint8Array(await subtle.digest("SHA-256", text.encode(token)));
  return { key: hex(keyId).slice(0, 16), proof: hex(clientKey.map((byte, i) => byte ^ signature[i])) };
}

function hex(bytes) {
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

function deferred() {
  const waiting = {};
  waiting.promise = new Promise((resolve, reject) => {
    waiting.resolve = resolve;
    waiting.reject = reject;
  });
  return waiting;
}
