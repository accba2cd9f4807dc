// "Where you're signed in": a small client of nilva-session's token API.
// Every piece of text from the API goes into the page through textContent, never innerHTML.
"use strict";

(function () {
  const app = document.getElementById("app");
  const urls = {
    login: app.dataset.loginUrl,
    logout: app.dataset.logoutUrl,
    active: app.dataset.activeUrl,
    // Set when the page is served over ASGI with Django Channels (demo/asgi.py routes it).
    websocket: app.dataset.websocketUrl,
  };

  // The token lives in sessionStorage: this is a demo where every tab is its own "device", and
  // sessionStorage is per tab and gone when the tab closes. Any script on the page can read it,
  // which is why the page loads no third-party code; a production app would rather keep the
  // token in an httpOnly cookie set by its own backend (see docs/demo.md).
  const TOKEN_KEY = "nilva-session-demo:token";
  const USER_KEY = "nilva-session-demo:username";
  const REFRESH_EVERY_MS = 10000;
  const RECONNECT_MAX_MS = 30000;

  const el = {
    message: document.getElementById("message"),
    signIn: document.getElementById("sign-in"),
    form: document.getElementById("sign-in-form"),
    username: document.getElementById("username"),
    password: document.getElementById("password"),
    sessions: document.getElementById("sessions"),
    title: document.getElementById("sessions-title"),
    summary: document.getElementById("summary"),
    list: document.getElementById("session-list"),
    signOutOthers: document.getElementById("sign-out-others"),
  };

  const SIGNED_OUT_MESSAGES = {
    session_ended: "You were signed out: this session was ended on another device.",
    session_suspended:
      "This session was suspended because your browser or network changed. Please sign in again.",
    session_expired: "Your session expired. Please sign in again.",
    session_idle: "You were signed out after a period of inactivity. Please sign in again.",
    user_inactive: "This account is disabled.",
  };

  // The reason of a websocket closed with 4001: the end reason when the server heard of the
  // end (revoked, logout, password_changed ...), else the refusal's code (as in SIGNED_OUT_MESSAGES).
  const END_REASONS = {
    idle_timeout: "session_idle",
    user_agent_changed: "session_suspended",
    ip_changed: "session_suspended",
    user_deactivated: "user_inactive",
    user_deleted: "user_inactive",
  };
  const SESSION_CLOSED = 4001;

  // ---------------------------------------------------------------------------------------
  // API
  // ---------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, data, retryAfter) {
      super((data && data.detail) || "HTTP " + status);
      this.status = status;
      this.code = (data && data.code) || "";
      this.detail = data && typeof data.detail === "string" ? data.detail : "";
      this.retryAfter = retryAfter;
    }
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  async function api(method, url, body) {
    const sentToken = token();
    const headers = { Accept: "application/json" };
    if (sentToken) headers.Authorization = "Token " + sentToken;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "omit", // the token is the credential; no cookie is needed
        cache: "no-store",
      });
    } catch (error) {
      throw new ApiError(0, { detail: "network" });
    }
    let data = null;
    if (response.status !== 204) {
      try {
        data = await response.json();
      } catch (error) {
        data = null;
      }
    }
    if (!response.ok) {
      const error = new ApiError(response.status, data, response.headers.get("Retry-After"));
      error.sentToken = sentToken;
      throw error;
    }
    return data;
  }

  function describeError(error) {
    if (error.status === 0) {
      return "Could not reach the server. Check that the demo is running and try again.";
    }
    if (error.status === 429) {
      const seconds = parseInt(error.retryAfter, 10);
      if (seconds > 0) {
        return "Too many attempts, try again in " + seconds + (seconds === 1 ? " second." : " seconds.");
      }
      return "Too many attempts, try again in a moment.";
    }
    if (error.code === "invalid_credentials") return "Wrong username or password.";
    if (error.status === 404) return "That session had already ended.";
    if (error.detail && error.status < 500) return error.detail;
    return "Something went wrong (HTTP " + error.status + "). Please try again.";
  }

  // An error from a signed-in call: a refused token (401) returns to the sign-in form, with
  // the reason; anything else is shown and the page stays as it is.
  function handleError(error) {
    if (error.status === 401) {
      if (error.sentToken && error.sentToken !== token()) return; // an older request; ignore
      const reason = SIGNED_OUT_MESSAGES[error.code] || "You were signed out. Please sign in again.";
      showSignIn(reason, "warning");
      return;
    }
    say(describeError(error), "error");
  }

  // ---------------------------------------------------------------------------------------
  // Messages and views
  // ---------------------------------------------------------------------------------------

  function say(text, tone) {
    el.message.textContent = text || "";
    el.message.dataset.tone = tone || "info";
    el.message.hidden = !text;
  }

  function showSignIn(message, tone, focus = true) {
    stopListening();
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(USER_KEY);
    el.list.replaceChildren();
    el.sessions.hidden = true;
    el.signIn.hidden = false;
    app.dataset.view = "sign-in";
    el.password.value = "";
    say(message, tone);
    if (focus) el.username.focus();
  }

  function showSessions() {
    el.signIn.hidden = true;
    el.sessions.hidden = false;
    app.dataset.view = "sessions";
    if (!el.list.children.length) el.summary.textContent = "Loading…";
  }

  // ---------------------------------------------------------------------------------------
  // Describing a session
  // ---------------------------------------------------------------------------------------

  function deviceKind(ua) {
    if (ua.is_tablet) return { icon: "tablet", label: "Tablet" };
    if (ua.is_mobile) return { icon: "phone", label: "Phone" };
    if (ua.is_pc) return { icon: "desktop", label: "Desktop" };
    if (ua.is_bot) return { icon: "unknown", label: "Bot" };
    return { icon: "unknown", label: "Unknown device" };
  }

  function known(value) {
    return value && value !== "Other" ? value : "";
  }

  // "Apple iPhone", "Samsung SM-G991B"; "" for a PC, whose user agent names no device.
  function deviceName(ua) {
    const brand = known(ua.device_brand);
    const model = known(ua.device_model);
    return model.startsWith(brand) ? model : [brand, model].filter(Boolean).join(" ");
  }

  function withVersion(name, version) {
    return version ? name + " " + version : name;
  }

  function sessionName(ua) {
    const browser = known(ua.browser) || "Unknown browser";
    const os = known(ua.os);
    return os ? browser + " on " + os : browser;
  }

  const relativeFormat = new Intl.RelativeTimeFormat("en", { numeric: "auto" });
  const UNITS = [
    ["year", 31557600],
    ["month", 2629800],
    ["week", 604800],
    ["day", 86400],
    ["hour", 3600],
    ["minute", 60],
  ];

  function relativeTime(date) {
    const seconds = (date.getTime() - Date.now()) / 1000;
    if (seconds > -45) return "just now"; // also absorbs a little clock skew
    for (const [unit, size] of UNITS) {
      if (-seconds >= size || unit === "minute") {
        return relativeFormat.format(Math.round(seconds / size), unit);
      }
    }
    return "";
  }

  function exactTime(date) {
    return date.toLocaleString("en", { dateStyle: "full", timeStyle: "long" });
  }

  function shortDate(date) {
    const options = { month: "short", day: "numeric", hour: "numeric", minute: "2-digit" };
    if (date.getFullYear() !== new Date().getFullYear()) options.year = "numeric";
    return date.toLocaleString("en", options);
  }

  // <time datetime="…" title="exact time">text</time>
  function timeElement(iso, format) {
    const node = document.createElement("time");
    if (!iso) {
      node.textContent = "unknown";
      return node;
    }
    const date = new Date(iso);
    node.dateTime = iso;
    node.title = exactTime(date);
    node.textContent = format(date);
    return node;
  }

  function icon(name) {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("class", "device-icon");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    const use = document.createElementNS(ns, "use");
    use.setAttribute("href", "#icon-" + name);
    svg.append(use);
    return svg;
  }

  function node(tag, className, text) {
    const element = document.createElement(tag);
    if (className) element.className = className;
    if (text !== undefined) element.textContent = text;
    return element;
  }

  function detail(list, term, value) {
    const row = node("div", "detail");
    row.append(node("dt", "", term));
    const dd = node("dd");
    if (typeof value === "string") dd.textContent = value;
    else dd.append(value);
    row.append(dd);
    list.append(row);
  }

  function sessionCard(session) {
    const ua = session.user_agent_data || {};
    const kind = deviceKind(ua);
    const name = sessionName(ua);

    const card = node("li", "card");
    card.dataset.sessionId = session.session_id;
    if (session.is_current) card.classList.add("current");

    const head = node("div", "card-head");
    head.append(icon(kind.icon));
    const titles = node("div", "card-titles");
    const titleRow = node("div", "card-title-row");
    titleRow.append(node("h2", "card-title", name));
    if (session.is_current) titleRow.append(node("span", "badge", "This device"));
    titles.append(titleRow);
    const versions = [
      known(ua.browser) && withVersion(ua.browser, ua.browser_version),
      known(ua.os) && withVersion(ua.os, ua.os_version),
    ];
    // One <span> per part, so that a narrow screen wraps between parts, not inside one.
    const subtitle = node("p", "card-subtitle");
    [kind.label, deviceName(ua), ...versions].filter(Boolean).forEach((part, index) => {
      if (index) subtitle.append(" · ");
      subtitle.append(node("span", "", part));
    });
    titles.append(subtitle);
    head.append(titles);
    card.append(head);

    const details = node("dl", "details");
    detail(details, "IP address", session.last_ip || "unknown");
    detail(details, "Last active", timeElement(session.last_online, relativeTime));
    detail(details, "Signed in", timeElement(session.created_at, shortDate));
    card.append(details);

    // Every card has its sign-out: this device's is POST logout/, the others' DELETE active/<id>/.
    const button = node("button", "button", "Sign out");
    button.type = "button";
    if (session.is_current) {
      button.classList.add("secondary");
      button.setAttribute("aria-label", "Sign out of this device");
      button.addEventListener("click", () => signOut(button));
    } else {
      button.classList.add("danger");
      button.setAttribute("aria-label", "Sign out " + name);
      button.addEventListener("click", () => signOutSession(session.session_id, name, button));
    }
    const foot = node("div", "card-foot");
    foot.append(button);
    card.append(foot);
    return card;
  }

  function render(sessions) {
    // This device first, then by most recent activity (the API's order).
    const ordered = [...sessions].sort((a, b) => Number(b.is_current) - Number(a.is_current));
    const others = ordered.length - (ordered.some((s) => s.is_current) ? 1 : 0);
    const user = sessionStorage.getItem(USER_KEY);
    const count = ordered.length + (ordered.length === 1 ? " active session" : " active sessions");
    el.summary.textContent = (user ? "Signed in as " + user + " · " : "") + count;
    el.signOutOthers.hidden = others === 0;
    el.list.replaceChildren(...ordered.map(sessionCard));
  }

  // ---------------------------------------------------------------------------------------
  // Live end: a websocket the server closes (code 4001) the moment this session ends
  // ---------------------------------------------------------------------------------------

  // The token goes in the subprotocol list (a browser cannot set headers on a websocket, and
  // a URL ends up in logs); the server answers with the subprotocol "nilva-session" alone.
  // While the socket is open the periodic refresh pauses; without it the page polls.
  let socket = null;
  let reconnectTimer = null;
  let reconnectDelay = 1000;

  function live(state) {
    app.dataset.live = state;
  }

  function listen() {
    const sentToken = token();
    if (!urls.websocket || !("WebSocket" in window) || !sentToken || socket) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    let opened;
    try {
      opened = new WebSocket(scheme + "//" + location.host + urls.websocket, [
        "nilva-session",
        "token." + sentToken,
      ]);
    } catch (error) {
      live("off");
      return;
    }
    socket = opened;
    live("connecting");
    opened.addEventListener("open", () => {
      if (socket !== opened) return;
      reconnectDelay = 1000;
      live("open");
    });
    opened.addEventListener("close", (event) => {
      if (socket !== opened) return; // closed by this page: stopListening()
      socket = null;
      live("closed");
      if (token() !== sentToken) return;
      if (event.code === SESSION_CLOSED) {
        const code = END_REASONS[event.reason] || event.reason;
        showSignIn(SIGNED_OUT_MESSAGES[code] || SIGNED_OUT_MESSAGES.session_ended, "warning");
        return;
      }
      // The server went away (a restart, the network): poll meanwhile, and try again later.
      refresh();
      reconnectTimer = setTimeout(() => {
        reconnectTimer = null;
        listen();
      }, reconnectDelay);
      reconnectDelay = Math.min(reconnectDelay * 2, RECONNECT_MAX_MS);
    });
  }

  function stopListening() {
    if (reconnectTimer) clearTimeout(reconnectTimer);
    reconnectTimer = null;
    reconnectDelay = 1000;
    const closing = socket;
    socket = null;
    if (closing) {
      live("closed");
      closing.close(1000);
    }
  }

  function listening() {
    return socket !== null && socket.readyState === WebSocket.OPEN;
  }

  // ---------------------------------------------------------------------------------------
  // Actions
  // ---------------------------------------------------------------------------------------

  let refreshing = null;

  // Reload the list. Used after every action, every REFRESH_EVERY_MS and when the window gets
  // focus, so a session ended elsewhere is noticed without a click. A timer or focus joins a
  // reload already on its way; after an action (force) a new one starts once that one is done,
  // so the list never shows what was true before the action.
  function refresh(force = false) {
    if (!token()) return Promise.resolve();
    if (refreshing && !force) return refreshing;
    const run = (refreshing || Promise.resolve())
      .then(() => {
        const sentToken = token();
        if (!sentToken) return undefined;
        return api("GET", urls.active).then((sessions) => {
          if (token() === sentToken) render(sessions);
        });
      })
      .catch(handleError)
      .finally(() => {
        if (refreshing === run) refreshing = null;
      });
    refreshing = run;
    return run;
  }

  async function busy(button, work) {
    button.disabled = true;
    try {
      await work();
    } finally {
      button.disabled = false;
    }
  }

  el.form.addEventListener("submit", (event) => {
    event.preventDefault();
    const submit = el.form.querySelector("button[type=submit]");
    const username = el.username.value.trim();
    const password = el.password.value;
    busy(submit, async () => {
      say("");
      try {
        const data = await api("POST", urls.login, { username, password });
        sessionStorage.setItem(TOKEN_KEY, data.token);
        sessionStorage.setItem(USER_KEY, username);
      } catch (error) {
        say(describeError(error), "error");
        el.password.value = "";
        el.password.focus();
        return;
      }
      el.password.value = "";
      el.list.replaceChildren();
      showSessions();
      el.title.focus();
      listen();
      await refresh(true);
    });
  });

  function signOutSession(sessionId, name, button) {
    busy(button, async () => {
      say("");
      try {
        await api("DELETE", urls.active + encodeURIComponent(sessionId) + "/");
        say("Signed out " + name + ".", "success");
      } catch (error) {
        handleError(error);
      }
      await refresh(true);
    });
  }

  el.signOutOthers.addEventListener("click", () => {
    busy(el.signOutOthers, async () => {
      say("");
      try {
        await api("DELETE", urls.active); // without token_id: every session but this one
        say("Signed out of all other sessions.", "success");
      } catch (error) {
        handleError(error);
      }
      await refresh(true);
    });
  });

  function signOut(button) {
    busy(button, async () => {
      say("");
      stopListening(); // this device's own end is no news to it
      try {
        await api("POST", urls.logout);
      } catch (error) {
        if (error.status !== 401) {
          handleError(error);
          listen(); // still signed in
          return;
        }
      }
      showSignIn("You signed out on this device.", "info");
    });
  }

  setInterval(() => {
    if (document.visibilityState === "visible" && !listening()) refresh();
  }, REFRESH_EVERY_MS);
  window.addEventListener("focus", () => refresh());
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") refresh();
  });

  if (token()) {
    showSessions();
    listen();
    refresh();
  } else {
    showSignIn("", "info", false);
  }
})();
