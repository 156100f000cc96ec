// The opsd web console. Plain JavaScript, no build step, no dependencies.
//
// Everything shown comes from opsd's public REST API with the user's own
// credentials; the API decides what the caller may see and do. Every string
// from the store is put in the page as text (textContent / text nodes), never
// parsed as HTML.
"use strict";

const TOKEN_KEY = "opsd.console.token";
// The parameters of GET /v1/operations the list passes through as they are.
const LIST_PARAMS = ["state", "scope", "resourceId", "createdBy", "idPrefix", "descriptionContains",
  "createdAfter", "createdBefore", "pageSize"];
// The parameters of GET /v1/operations:watch that narrow the feed like the list.
const FEED_PARAMS = ["scope", "resourceId", "createdBy", "idPrefix"];

let settings = { traceUrl: null, credentialsRequired: false };
let caller = null;

// ---- elements, text only ----

// Replaces the children of `node` with `children` (nested lists flattened,
// null and false left out, anything else as text).
function fill(node, ...children) {
  node.replaceChildren(...children.flat(Infinity)
    .filter((child) => child !== null && child !== undefined && child !== false)
    .map((child) => (child instanceof Node ? child : document.createTextNode(String(child)))));
  return node;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  return fill(node, ...children);
}

const main = () => document.getElementById("main");

function show(...nodes) {
  fill(main(), ...nodes);
}

function errorBox(error) {
  return el("div", { class: "error", role: "alert" }, describeError(error));
}

function describeError(error) {
  if (error && error.status) return `${error.status} ${error.codeName || ""}: ${error.message}`.replace(" : ", ": ");
  return String(error && error.message ? error.message : error);
}

// ---- the API ----

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function authHeaders(headers) {
  const t = token();
  if (t) headers.authorization = "Bearer " + t;
  return headers;
}

const CODE_NAMES = ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
  "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
  "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"];

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `http ${status}`);
    this.status = status;
    this.code = body && typeof body.code === "number" ? body.code : null;
    this.codeName = this.code !== null ? CODE_NAMES[this.code] || String(this.code) : "";
  }
}

async function api(path, options) {
  const init = {
    method: (options && options.method) || "GET",
    headers: authHeaders({ accept: "application/json" }),
    cache: "no-store",
    credentials: "omit",
  };
  if (options && options.body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(options.body);
  }
  const response = await fetch(path, init);
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    const error = new ApiError(response.status, body);
    if (response.status === 401 && !(options && options.quiet)) askForToken(error);
    throw error;
  }
  return body;
}

// A request started early, before the page knows it needs it (see start):
// a refusal asks for nothing, and a failure waits for whoever reads it.
function early(path) {
  const pending = api(path, { quiet: true });
  pending.catch(() => {});
  return pending;
}

// The change feed, read with fetch so that the token goes in a header (an
// EventSource cannot send one). Reconnects with last-event-id; calls
// `onReset` when the feed's position is too old and the view must re-list,
// and `onOpen` when a feed starting from now has opened (its bookmark came):
// what changed between the view's first read and that moment is in no
// event, so the view reads again then.
function follow(params, onEvent, onReset, onOpen) {
  const controller = new AbortController();
  let last = null;
  let fromNow = true;
  let stopped = false;
  const live = document.getElementById("live");
  const setLive = (on) => {
    live.textContent = on ? "live" : "reconnecting";
    live.className = "live " + (on ? "on" : "off");
  };
  const handle = (block) => {
    let id = null, name = "message", data = "";
    for (const line of block.split("\n")) {
      if (line === "" || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "id") id = value;
      else if (field === "event") name = value;
      else if (field === "data") data += (data ? "\n" : "") + value;
    }
    if (id !== null) {
      last = id;
      if (fromNow) {
        fromNow = false;
        if (onOpen) onOpen();
      }
    }
    if (!data) return;
    let parsed;
    try {
      parsed = JSON.parse(data);
    } catch (_) {
      return;
    }
    if (name === "error") {
      // OUT_OF_RANGE: the position is older than the events kept.
      if (parsed.code === 11) {
        last = null;
        onReset();
      }
      throw new ApiError(0, parsed);
    }
    onEvent(parsed, name);
  };
  (async () => {
    let backoff = 250;
    while (!stopped) {
      try {
        const headers = authHeaders({ accept: "text/event-stream" });
        if (last) headers["last-event-id"] = last;
        fromNow = !last;
        const response = await fetch("/v1/operations:watch?" + params.toString(), {
          headers, cache: "no-store", credentials: "omit", signal: controller.signal,
        });
        if (!response.ok) {
          const body = await response.json().catch(() => null);
          throw new ApiError(response.status, body);
        }
        setLive(true);
        backoff = 250;
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            handle(block);
          }
        }
      } catch (error) {
        if (stopped) return;
        if (error.status === 401) {
          askForToken(error);
          return;
        }
      }
      setLive(false);
      await new Promise((resolve) => setTimeout(resolve, backoff));
      backoff = Math.min(backoff * 2, 10000);
    }
  })();
  return () => {
    stopped = true;
    controller.abort();
  };
}

// Coalesces refreshes of one operation while one is in flight.
function refresher(load) {
  const running = new Map();
  return (id) => {
    const state = running.get(id);
    if (state) {
      state.again = true;
      return;
    }
    const entry = { again: false };
    running.set(id, entry);
    (async () => {
      do {
        entry.again = false;
        try {
          await load(id);
        } catch (_) {
          // The next event or reload shows it.
        }
      } while (entry.again);
      running.delete(id);
    })();
  };
}

// ---- auth ----

function askForToken(error) {
  const input = el("input", { type: "password", id: "token", name: "token", autocomplete: "off", required: true, spellcheck: "false" });
  const form = el("form", { class: "login", onsubmit: (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    location.reload();
  } },
  el("h1", {}, "Sign in"),
  el("p", { class: "muted" }, "This opsd needs credentials: an opsd token or a JWT. It is kept for this tab only and sent as an authorization header."),
  error && token() ? el("div", { class: "error", role: "alert" }, "The token was refused: " + error.message) : null,
  el("label", { for: "token" }, "Token", input),
  el("div", {}, el("button", { type: "submit" }, "Sign in")));
  if (error && token()) sessionStorage.removeItem(TOKEN_KEY);
  show(form);
  input.focus();
}

async function whoAmI(pending) {
  try {
    caller = await pending;
  } catch (error) {
    if (error.status === 401) askForToken(error);
    throw error;
  }
  const who = document.getElementById("who");
  const scopes = caller.allScopes ? "all scopes" : (caller.scopes || []).join(", ");
  who.textContent = `${caller.id} · ${caller.roles.join(", ")} · ${scopes}`;
  const out = document.getElementById("sign-out");
  if (token()) {
    out.hidden = false;
    out.onclick = () => {
      sessionStorage.removeItem(TOKEN_KEY);
      location.reload();
    };
  }
}

// ---- formatting ----

function outcome(op) {
  const o = op.operation || {};
  if (o.done) {
    if (o.error) return o.error.code === 1 ? "cancelled" : "failed";
    return "succeeded";
  }
  return op.state === "OPERATION_STATE_CANCEL_REQUESTED" ? "cancel-requested" : "running";
}

function stateBadge(op) {
  const name = outcome(op);
  return el("span", { class: "state " + name }, name.replace("-", " "));
}

// One formatter for every time shown: toLocaleString with options builds a
// new one per call, which costs more than the rest of a row.
const TIME_FORMAT = new Intl.DateTimeFormat(undefined,
  { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });

function time(value) {
  if (!value) return "";
  const date = new Date(value);
  if (isNaN(date)) return value;
  return TIME_FORMAT.format(date);
}

function timeCell(value) {
  return el("time", { datetime: value || null, title: value || null }, time(value));
}

function ago(value, now) {
  return duration((now || Date.now()) - new Date(value).getTime());
}

function duration(ms) {
  if (!isFinite(ms)) return "";
  if (ms < 1000) return Math.max(0, Math.round(ms)) + "ms";
  const s = Math.round(ms / 1000);
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
  return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
}

function progressBar(progress, withSteps) {
  const p = progress || {};
  const done = Number(p.workDone || 0), total = Number(p.workTotal || 0);
  const share = total > 0 ? Math.min(100, Math.round((done / total) * 100)) : null;
  const fill = el("div", { class: "fill" });
  if (share !== null) fill.style.width = share + "%";
  const bar = el("div", { class: "track", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": total || null,
    "aria-valuenow": total ? done : null, "aria-label": "progress" }, fill);
  const line = [share !== null ? `${done}/${total} (${share}%)` : done ? `${done} done` : "", p.message || ""]
    .filter(Boolean).join(" · ");
  const parts = [bar, el("div", { class: "text" }, line)];
  if (withSteps && p.steps && p.steps.length) {
    parts.push(el("ol", { class: "steps", "aria-label": "steps" },
      p.steps.map((s) => el("li", { class: s.state || "STATE_PENDING", title: (s.state || "STATE_PENDING").replace("STATE_", "").toLowerCase() },
        s.name))));
  }
  return el("div", { class: "progress" }, parts);
}

function traceId(traceParent) {
  const parts = (traceParent || "").split("-");
  return parts.length === 4 && /^[0-9a-f]{32}$/.test(parts[1]) ? parts[1] : "";
}

function traceLink(id) {
  if (!id) return "";
  if (settings.traceUrl && /^[0-9a-f]{32}$/.test(id)) {
    return el("a", { href: settings.traceUrl.split("{trace_id}").join(id), class: "mono", rel: "noreferrer" }, id);
  }
  return el("span", { class: "mono" }, id);
}

function json(value) {
  return el("pre", { class: "json", tabindex: 0 }, JSON.stringify(value, null, 2));
}

function copyButton(label, text) {
  const button = el("button", { type: "button", title: text, onclick: async () => {
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = "Copied";
    } catch (_) {
      window.prompt("Copy:", text);
    }
    setTimeout(() => { button.textContent = label; }, 1500);
  } }, label);
  return button;
}

function kindName(kind) {
  return (kind || "").replace("EVENT_KIND_", "").toLowerCase().replaceAll("_", " ");
}

// ---- the operations list ----

// The query of the list's first page.
function listQuery(filters) {
  const query = new URLSearchParams();
  for (const name of LIST_PARAMS) if (filters[name]) query.set(name, filters[name]);
  return query;
}

function filtersFromUrl() {
  const url = new URLSearchParams(location.search);
  const filters = {};
  for (const name of LIST_PARAMS) {
    const value = url.get(name);
    if (value) filters[name] = value;
  }
  return filters;
}

function toLocalInput(rfc3339) {
  const date = new Date(rfc3339);
  if (!rfc3339 || isNaN(date)) return "";
  const local = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
  return local.toISOString().slice(0, 19);
}

// Whether an operation read after an event of the feed belongs in the list.
// Rows of a List page are the server's answer and are shown as they come.
function matches(op, filters) {
  const o = op.operation || {};
  const state = (filters.state || "").toUpperCase().replace("STATE_FILTER_", "");
  if (state === "RUNNING" && o.done) return false;
  if (state === "DONE" && !o.done) return false;
  if (filters.scope && op.scope !== filters.scope) return false;
  if (filters.resourceId && op.resourceId !== filters.resourceId) return false;
  if (filters.createdBy && o.createdBy !== filters.createdBy) return false;
  if (filters.idPrefix && !(o.id || "").startsWith(filters.idPrefix)) return false;
  // The feed cannot filter by description (an event carries its operation's
  // description only when it is created), so an operation read after an event
  // is checked here, by the rule List applies: both lowercased by Unicode's
  // default mapping (toLowerCase, never the locale's), then a plain substring.
  if (filters.descriptionContains
      && !(o.description || "").toLowerCase().includes(filters.descriptionContains.toLowerCase())) return false;
  const created = new Date(o.createdAt).getTime();
  if (filters.createdAfter && created < new Date(filters.createdAfter).getTime()) return false;
  if (filters.createdBefore && created >= new Date(filters.createdBefore).getTime()) return false;
  return true;
}

function filterForm(filters) {
  const text = (name, label, placeholder) => el("label", {}, label,
    el("input", { name, value: filters[name] || "", placeholder: placeholder || null, spellcheck: "false" }));
  const when = (name, label) => el("label", {}, label,
    el("input", { name, type: "datetime-local", step: 1, value: toLocalInput(filters[name]) }));
  const state = (filters.state || "").toUpperCase().replace("STATE_FILTER_", "");
  const select = el("select", { name: "state" },
    ["", "RUNNING", "DONE"].map((v) => el("option", { value: v, selected: state === v }, v ? v.toLowerCase() : "any")));
  const form = el("form", { class: "filters", role: "search", "aria-label": "Filters", onsubmit: (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const url = new URLSearchParams();
    for (const [name, raw] of data.entries()) {
      let value = String(raw).trim();
      if (!value) continue;
      if (name === "createdAfter" || name === "createdBefore") value = new Date(value).toISOString();
      url.set(name, value);
    }
    if (filters.pageSize) url.set("pageSize", filters.pageSize);
    const query = url.toString();
    location.assign("/console" + (query ? "?" + query : ""));
  } },
  el("label", {}, "State", select),
  text("scope", "Scope"),
  text("resourceId", "Resource id"),
  text("createdBy", "Created by"),
  text("idPrefix", "Id prefix", "e.g. fhm"),
  when("createdAfter", "Created after"),
  when("createdBefore", "Created before"),
  text("descriptionContains", "Description contains"),
  el("div", { class: "actions" },
    el("button", { type: "submit" }, "Apply"),
    el("button", { type: "button", onclick: () => location.assign("/console") }, "Clear")));
  return form;
}

function operationRow(op) {
  const o = op.operation || {};
  const href = "/console/operations/" + encodeURIComponent(o.id);
  return el("tr", { "data-id": o.id, "data-created": o.createdAt, "data-modified": o.modifiedAt || "", "data-state": outcome(op) },
    el("td", { class: "id" }, el("a", { href }, o.id)),
    el("td", { class: "desc" }, o.description || ""),
    el("td", {}, stateBadge(op)),
    el("td", {}, o.done ? "" : progressBar(op.progress, false)),
    el("td", { class: "hide-narrow" }, op.resourceId || ""),
    el("td", { class: "hide-narrow" }, op.scope || ""),
    el("td", { class: "hide-narrow" }, o.createdBy || ""),
    el("td", {}, timeCell(o.createdAt)),
    el("td", { class: "hide-narrow" }, timeCell(o.modifiedAt)));
}

// An RFC 3339 time as nanoseconds since 1970 (a BigInt), so that two
// versions a microsecond apart still compare; 0 when absent or unreadable.
function modifiedNanos(rfc3339) {
  const match = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$/.exec(rfc3339 || "");
  if (!match) return 0n;
  const millis = Date.parse(match[1] + match[3]);
  if (Number.isNaN(millis)) return 0n;
  const fraction = BigInt((match[2] || "").padEnd(9, "0").slice(0, 9));
  return BigInt(millis) * 1000000n + fraction;
}

function newer(a, b) {
  // Newest first, as List orders: by creation time, then id.
  const ta = new Date(a.created).getTime(), tb = new Date(b.created).getTime();
  return ta !== tb ? ta > tb : a.id > b.id;
}

// `firstPage`: the first page's answer, already asked for.
async function listPage(firstPage) {
  const filters = filtersFromUrl();
  const tbody = el("tbody", { id: "rows" });
  const status = el("div", { class: "empty", id: "list-status" }, "Loading…");
  const more = el("button", { type: "button", id: "more", class: "more", hidden: true }, "Load more");
  show(
    el("h1", {}, "Operations"),
    filterForm(filters),
    el("div", { class: "table-wrap" }, el("table", { id: "operations" },
      el("thead", {}, el("tr", {},
        ["Id", "Description", "State", "Progress"].map((h) => el("th", { scope: "col" }, h)),
        ["Resource", "Scope", "Created by"].map((h) => el("th", { scope: "col", class: "hide-narrow" }, h)),
        el("th", { scope: "col" }, "Created"),
        el("th", { scope: "col", class: "hide-narrow" }, "Modified"))),
      tbody)),
    status, more);

  let nextPageToken = "";
  const query = listQuery(filters);

  const updateStatus = () => {
    status.textContent = tbody.children.length ? "" : nextPageToken ? "No matching operation on this page." : "No operation matches.";
    status.hidden = !status.textContent;
    more.hidden = !nextPageToken;
  };

  const load = async (pending) => {
    const q = new URLSearchParams(query);
    if (nextPageToken) q.set("pageToken", nextPageToken);
    const page = await (pending || api("/v1/operations?" + q.toString()));
    const rows = document.createDocumentFragment();
    for (const op of page.operations || []) {
      const id = op.operation && op.operation.id;
      if (tbody.querySelector(`tr[data-id="${CSS.escape(id)}"]`)) continue;
      rows.append(operationRow(op));
    }
    tbody.append(rows);
    nextPageToken = page.nextPageToken || "";
    updateStatus();
  };
  more.addEventListener("click", () => load().catch((e) => status.replaceChildren(errorBox(e))));

  try {
    await load(firstPage);
  } catch (error) {
    if (error.status !== 401) status.replaceChildren(errorBox(error));
    return;
  }
  // The first page's rows are in the document (read by opsd-bench's console scenario).
  performance.mark("opsd:first-page");

  const upsert = (op) => {
    const o = op.operation || {};
    const existing = tbody.querySelector(`tr[data-id="${CSS.escape(o.id)}"]`);
    // Answers may arrive out of order (a page read against a Get): an older
    // version never replaces a newer one.
    if (existing && modifiedNanos(o.modifiedAt) < modifiedNanos(existing.dataset.modified)) return;
    if (!matches(op, filters)) {
      if (existing) existing.remove();
      updateStatus();
      return;
    }
    const row = operationRow(op);
    if (existing) {
      existing.replaceWith(row);
      if (existing.dataset.state !== row.dataset.state) row.classList.add("flash");
      return;
    }
    const mine = { id: o.id, created: o.createdAt };
    const after = [...tbody.children].find((r) => newer(mine, { id: r.dataset.id, created: r.dataset.created }));
    if (after) tbody.insertBefore(row, after);
    else if (!nextPageToken) tbody.append(row);
    else return; // Older than the loaded rows: the next page has it.
    row.classList.add("flash");
    updateStatus();
  };
  const refresh = refresher(async (id) => {
    try {
      upsert(await api("/v1/operations/" + encodeURIComponent(id)));
    } catch (error) {
      // Gone (retention) or out of the caller's sight: drop the row.
      if (error.status === 404) {
        const row = tbody.querySelector(`tr[data-id="${CSS.escape(id)}"]`);
        if (row) row.remove();
      }
    }
  });
  const feed = new URLSearchParams();
  for (const name of FEED_PARAMS) if (filters[name]) feed.set(name, filters[name]);
  follow(feed, (event) => {
    if (event.operationId) refresh(event.operationId);
  }, () => location.reload(), async () => {
    // Rows shown may have changed before the feed opened. One fresh read of
    // the first page brings most of them and any new ones; only rows it does
    // not hold (loaded from later pages, pushed down, or no longer matching)
    // are read one by one.
    let fresh = new Set();
    try {
      const page = await api("/v1/operations?" + new URLSearchParams(query).toString());
      for (const op of page.operations || []) {
        upsert(op);
        if (op.operation) fresh.add(op.operation.id);
      }
    } catch (_) {
      // Then every row is read by itself.
      fresh = new Set();
    }
    for (const row of [...tbody.children]) if (!fresh.has(row.dataset.id)) refresh(row.dataset.id);
  });
}

// ---- one operation ----

function field(name, value) {
  if (value === undefined || value === null || value === "") return [];
  return [el("dt", {}, name), el("dd", {}, value)];
}

async function operationPage(id) {
  const root = el("div", { id: "operation" });
  show(root);
  let op, events;
  const kindFilter = new URLSearchParams(location.search).get("kind") || "";

  const loadEvents = async () => {
    const all = [];
    let pageToken = "";
    // A hard cap per operation keeps timelines bounded; 20 pages is far past it.
    for (let i = 0; i < 20; i++) {
      const q = new URLSearchParams({ pageSize: "1000" });
      if (pageToken) q.set("pageToken", pageToken);
      const page = await api(`/v1/operations/${encodeURIComponent(id)}/events?${q}`);
      all.push(...(page.events || []));
      pageToken = page.nextPageToken || "";
      if (!pageToken) break;
    }
    return all;
  };

  const render = () => {
    const o = op.operation || {};
    const host = `${location.protocol}//${location.host}`;
    const tokenFlag = settings.credentialsRequired ? " --token \"$OPSD_TOKEN\"" : "";
    const opsctl = `opsctl --endpoint ${host}${tokenFlag} get ${o.id}`;
    const grpcurl = `grpcurl ${location.protocol === "https:" ? "" : "-plaintext "}` +
      `${settings.credentialsRequired ? "-H \"authorization: Bearer $OPSD_TOKEN\" " : ""}` +
      `-d '{"operationId":"${o.id}"}' ${location.host} opsd.v1.OperationService/Get`;
    const mayCancel = caller && caller.may && caller.may.cancel && !o.done &&
      op.state !== "OPERATION_STATE_CANCEL_REQUESTED" &&
      op.cancellationPolicy !== "CANCELLATION_POLICY_NOT_CANCELLABLE";
    const message = el("div", { id: "action-status", role: "status" });
    const cancel = mayCancel ? el("button", { type: "button", id: "cancel", class: "danger", onclick: async () => {
      if (!window.confirm(`Cancel operation ${o.id}?`)) return;
      try {
        await api(`/operations/${encodeURIComponent(o.id)}:cancel`, { method: "POST", body: {} });
        await reload();
        document.getElementById("action-status").textContent = "Cancel requested";
      } catch (error) {
        document.getElementById("action-status").replaceChildren(errorBox(error));
      }
    } }, "Cancel…") : null;

    const kinds = [...new Set(events.map((e) => e.kind))];
    const kindSelect = el("select", { id: "kind", "aria-label": "Event kind", onchange: () => {
      const url = new URL(location.href);
      if (kindSelect.value) url.searchParams.set("kind", kindSelect.value);
      else url.searchParams.delete("kind");
      history.replaceState(null, "", url);
      renderTimeline();
    } }, el("option", { value: "" }, "every kind"),
    kinds.map((k) => el("option", { value: k, selected: k === (new URLSearchParams(location.search).get("kind") || kindFilter) }, kindName(k))));
    const timeline = el("tbody", { id: "events" });
    const renderTimeline = () => {
      const kind = kindSelect.value;
      fill(timeline, events.filter((e) => !kind || e.kind === kind).map((e) => el("tr", { "data-kind": e.kind },
        el("td", {}, e.sequence),
        el("td", {}, timeCell(e.time)),
        el("td", {}, kindName(e.kind), e.folded && Number(e.folded) > 0 ? el("span", { class: "muted" }, ` (+${e.folded} folded)`) : null),
        el("td", {}, e.actor || ""),
        el("td", { class: "desc" },
          e.description || "",
          e.progress ? (e.progress.message || `${e.progress.workDone || 0}/${e.progress.workTotal || 0}`) : "",
          e.error ? `${CODE_NAMES[e.error.code || 0] || e.error.code}: ${e.error.message || ""}` : "",
          e.responseTypeUrl ? e.responseTypeUrl : ""),
        el("td", { class: "hide-narrow" }, traceLink(e.traceId)))));
    };
    renderTimeline();

    const tid = traceId(op.traceParent);
    fill(root,
      el("p", {}, el("a", { href: "/console" }, "← Operations")),
      el("h1", {}, el("span", { class: "mono", id: "op-id" }, o.id), " ", stateBadge(op)),
      o.description ? el("p", { id: "description", class: "desc" }, o.description) : null,
      el("div", { class: "toolbar" },
        copyButton("Copy id", o.id),
        copyButton("Copy opsctl command", opsctl),
        copyButton("Copy grpcurl command", grpcurl),
        cancel),
      message,
      o.done ? null : el("section", { "aria-label": "Progress", id: "progress" }, el("h2", {}, "Progress"), progressBar(op.progress, true)),
      el("h2", {}, "Fields"),
      el("dl", { class: "fields", id: "fields" },
        field("State", (op.state || "").replace("OPERATION_STATE_", "").toLowerCase().replace("_", " ")),
        field("Done", o.done ? "yes" : "no"),
        field("Scope", op.scope),
        field("Resource id", op.resourceId),
        field("Created by", o.createdBy),
        field("Created at", timeCell(o.createdAt)),
        field("Modified at", timeCell(o.modifiedAt)),
        field("Cancellation", (op.cancellationPolicy || "CANCELLATION_POLICY_IMMEDIATE").replace("CANCELLATION_POLICY_", "").toLowerCase().replace("_", " ")),
        field("Cancel requested at", op.cancelRequestedAt ? timeCell(op.cancelRequestedAt) : null),
        field("Deadline", op.deadline ? timeCell(op.deadline) : null),
        field("Lease expires at", op.leaseExpiresAt ? timeCell(op.leaseExpiresAt) : null),
        field("Exclusive", op.exclusive ? "yes" : null),
        field("Failure reported at", op.failureReportedAt ? timeCell(op.failureReportedAt) : null),
        field("Trace", tid ? traceLink(tid) : null),
        field("Trace state", op.traceState)),
      o.metadata ? [el("h2", {}, "Metadata"), el("div", { id: "metadata" }, json(o.metadata))] : null,
      op.reportedFailure && !o.done ? [el("h2", {}, "Reported failure"), json(op.reportedFailure)] : null,
      o.response ? [el("h2", {}, "Response"), el("div", { id: "response" }, json(o.response))] : null,
      o.error ? [el("h2", {}, "Error"), el("div", { id: "error" }, json(o.error))] : null,
      el("h2", {}, "Timeline"),
      el("div", { class: "row" }, el("label", { for: "kind" }, "Show "), kindSelect),
      el("div", { class: "table-wrap" }, el("table", { id: "timeline" },
        el("thead", {}, el("tr", {}, ["#", "Time", "Kind", "Actor", "Details"].map((h) => el("th", { scope: "col" }, h)),
          el("th", { scope: "col", class: "hide-narrow" }, "Trace"))),
        timeline)));
    document.title = `${o.id} · opsd console`;
  };

  const reload = async () => {
    [op, events] = await Promise.all([api("/v1/operations/" + encodeURIComponent(id)), loadEvents()]);
    render();
  };
  try {
    await reload();
  } catch (error) {
    if (error.status !== 401) show(el("h1", {}, "Operation"), errorBox(error));
    return;
  }
  const refresh = refresher(() => reload());
  follow(new URLSearchParams({ idPrefix: id }), (event) => {
    if (event.operationId === id) refresh(id);
  }, () => refresh(id), () => refresh(id));
}

// ---- overview ----

// A proto3 JSON duration ("1.5s") in milliseconds; NaN when unset.
function durationMs(value) {
  if (typeof value !== "string" || !value.endsWith("s")) return NaN;
  return Number(value.slice(0, -1)) * 1000;
}

function count(value) {
  return Number(value || 0);
}

function smallTable(id, headers, rows, empty) {
  if (!rows.length) return el("p", { class: "empty", id }, empty);
  return el("div", { class: "table-wrap" }, el("table", { id },
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows)));
}

// One rule that made an operation stuck, in words, with its numbers.
function stuckReason(reason) {
  if (reason.unchanged) {
    // How long it has been quiet is the row's "Unchanged for".
    const r = reason.unchanged;
    return el("span", { class: "reason", "data-rule": "unchanged" },
      `no change for over ${duration(durationMs(r.threshold))}`);
  }
  if (reason.slowerThanUsual) {
    const r = reason.slowerThanUsual;
    const quiet = durationMs(r.quiet), gap = durationMs(r.typicalGap);
    return el("span", { class: "reason", "data-rule": "slower-than-usual" },
      `${Math.round(quiet / Math.max(gap, 1))}× the usual ${duration(gap)} between its producer's updates`);
  }
  if (reason.leaseLapsing) {
    const lapses = durationMs(reason.leaseLapsing.lapsesIn);
    return el("span", { class: "reason", "data-rule": "lease-lapsing" },
      lapses > 0 ? `lease lapses in ${duration(lapses)}` : "lease lapsed");
  }
  return el("span", { class: "reason" }, "stuck");
}

function joined(items, separator) {
  return items.flatMap((item, i) => (i ? [separator, item] : [item]));
}

// Everything on this page comes from one call, GET /v1/overview: the server
// reads it from the store, so every replica shows the same.
async function overviewPage() {
  show(el("h1", {}, "Overview"), el("p", { class: "empty" }, "Loading…"));
  let overview;
  try {
    overview = await api("/v1/overview");
  } catch (error) {
    if (error.status !== 401) show(el("h1", {}, "Overview"), errorBox(error));
    return;
  }
  const now = new Date(overview.now).getTime();
  const window = durationMs(overview.window);
  const stuckAfter = durationMs(overview.stuckAfter);
  const inWindow = window === 3600 * 1000 ? "the last hour" : `the last ${duration(window)}`;
  const link = (o) => el("a", { href: "/console/operations/" + encodeURIComponent(o.id), class: "mono" }, o.id);
  const producers = overview.producers || [];
  const completed = producers.reduce((n, p) => n + count(p.completed), 0);
  const failed = producers.reduce((n, p) => n + count(p.failed), 0);
  const stuck = overview.stuck || [];
  const stuckCount = count(overview.stuckCount);
  const rows = producers.map((p) => {
    const done = count(p.completed), overdue = count(p.cancelOverdue);
    return el("tr", { "data-prefix": p.idPrefix },
      el("td", { class: "mono" }, el("a", { href: "/console?idPrefix=" + encodeURIComponent(p.idPrefix) }, p.idPrefix)),
      el("td", {}, count(p.running)),
      el("td", {}, done),
      el("td", { class: count(p.failed) ? "failed-share" : "" }, done ? Math.round((count(p.failed) / done) * 100) + "%" : ""),
      el("td", {}, count(p.cancelled) || ""),
      el("td", {}, duration(durationMs(p.p50ToDone))),
      el("td", {}, duration(durationMs(p.p99ToDone))),
      el("td", {}, duration(durationMs(p.p50CancelToDone))),
      el("td", {}, duration(durationMs(p.typicalGap))),
      el("td", {}, overdue ? el("span", { class: "state failed", title: `cancel requested over ${duration(stuckAfter)} ago, still running` },
        `${overdue} ignoring cancel`) : ""));
  });
  const notes = [];
  if (overview.stuckTruncated) notes.push("Stuck operations were looked for among the 1,000 running ones changed least recently.");
  if (overview.sampled) notes.push(`Percentiles cover the ${count(overview.sampleSize).toLocaleString("en")} operations done most recently.`);
  show(
    el("h1", {}, "Overview"),
    el("div", { class: "cards" },
      el("div", { class: "card", id: "card-running" }, el("div", { class: "n" }, count(overview.running)), el("div", { class: "l" }, "running")),
      el("div", { class: "card", id: "card-stuck" }, el("div", { class: "n" }, stuckCount), el("div", { class: "l" }, "stuck")),
      el("div", { class: "card", id: "card-completed" }, el("div", { class: "n" }, completed), el("div", { class: "l" }, `done in ${inWindow}`)),
      el("div", { class: "card", id: "card-failed" }, el("div", { class: "n" }, failed), el("div", { class: "l" }, `failed in ${inWindow}`))),
    notes.length ? el("p", { class: "muted", id: "overview-notes" }, notes.join(" ")) : null,
    el("h2", {}, "Stuck"),
    el("p", { class: "muted" }, `Running with no change for over ${duration(stuckAfter)}, or for ${overview.stuckGapFactor}× longer than its producer usually takes between updates (at least ${duration(durationMs(overview.stuckGapFloor))}), or with a lease lapsing within ${duration(durationMs(overview.leaseWarning))}.`),
    smallTable("stuck", ["Id", "Description", "Unchanged for", "Why", "Progress"], stuck.map((s) => el("tr", {},
      el("td", {}, link(s.operation.operation)),
      el("td", { class: "desc" }, s.operation.operation.description || ""),
      el("td", {}, ago(s.operation.operation.modifiedAt, now)),
      el("td", { class: "why" }, joined((s.reasons || []).map(stuckReason), "; ")),
      el("td", {}, progressBar(s.operation.progress, false)))), "Nothing is stuck."),
    stuckCount > stuck.length ? el("p", { class: "muted" }, `Showing ${stuck.length} of ${stuckCount}.`) : null,
    el("h2", {}, "Oldest running"),
    smallTable("oldest", ["Id", "Description", "Running for", "Progress"], (overview.oldestRunning || []).map((op) => el("tr", {},
      el("td", {}, link(op.operation)),
      el("td", { class: "desc" }, op.operation.description || ""),
      el("td", {}, ago(op.operation.createdAt, now)),
      el("td", {}, progressBar(op.progress, false)))), "Nothing is running."),
    el("h2", {}, `By producer (id prefix), ${inWindow}`),
    smallTable("producers", ["Prefix", "Running", "Done", "Failed", "Cancelled", "p50", "p99", "Cancel honoured (p50)", "Usual gap", ""], rows,
      `No operation in ${inWindow}.`));
}

// ---- start ----

async function start() {
  const path = location.pathname.replace(/\/+$/, "");
  const match = path.match(/^\/console\/operations\/([^/]+)$/);
  const isList = !match && path !== "/console/overview";
  // The settings, the caller and the list's first page are asked for at once,
  // not one after the other: the first page shows a round trip or two sooner.
  const settingsRead = fetch("/console/settings.json", { cache: "no-store", credentials: "omit" })
    .then((response) => response.json());
  const callerRead = early("/v1/caller");
  const firstPage = isList ? early("/v1/operations?" + listQuery(filtersFromUrl()).toString()) : null;
  try {
    settings = await settingsRead;
  } catch (_) {
    // Defaults.
  }
  const nav = path === "/console/overview" ? "nav-overview" : "nav-list";
  document.getElementById(nav).setAttribute("aria-current", "page");
  if (settings.credentialsRequired && !token()) {
    askForToken(null);
    return;
  }
  try {
    await whoAmI(callerRead);
  } catch (error) {
    if (error.status !== 401) show(errorBox(error));
    return;
  }
  if (match) await operationPage(decodeURIComponent(match[1]));
  else if (path === "/console/overview") await overviewPage();
  else await listPage(firstPage);
}

start();
