"use strict";
// Everything users and the model write is put on the page with textContent, never
// innerHTML: a message such as <script> shows as text.
const API = "/api/v1/connections";
const PAGE = 30;
const $ = (id) => document.getElementById(id);

const state = {
  scope: null,
  conversations: new Map(),   // id -> conversation (current scope)
  order: [],                  // ids in list order
  cursor: null,               // next list page
  listEnd: false,
  listLoading: false,
  listGeneration: 0,          // bumps on every list reset; stale pages are dropped
  active: null,               // id of the open conversation
  messages: [],               // messages of the open conversation
  olderCursor: null,          // seq of the oldest loaded message, when older exist
  loadingOlder: false,
  openGeneration: 0,          // bumps on every switch; stale loads are dropped
  streams: new Map(),         // conversation id -> { text, toolCalls, userMessage, error }
  renaming: false,            // an inline rename is open: the list waits to re-render
};

async function api(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(API + path, init);
  if (!response.ok) {
    let detail = response.statusText;
    try { const problem = await response.json(); detail = problem.detail || problem.title || detail; } catch (_) {}
    throw new Error(`${response.status}: ${detail}`);
  }
  return response.status === 204 ? null : response.json();
}

const scopePath = () => "/" + encodeURIComponent(state.scope);
const chatPath = (id) => `${scopePath()}/conversations/${id}`;

function status(text) { $("status").textContent = text || ""; }

// ---------------------------------------------------------------- scopes
function knownScopes() {
  try { const saved = JSON.parse(localStorage.getItem("scopes")); if (Array.isArray(saved) && saved.length) return saved; } catch (_) {}
  return ["analytics-db", "billing-db"];
}

function renderScopes(selected) {
  const select = $("scope");
  select.replaceChildren(...knownScopes().map((name) => {
    const option = document.createElement("option");
    option.value = name; option.textContent = name;
    return option;
  }));
  select.value = selected;
}

function switchScope(scope) {
  state.scope = scope;
  localStorage.setItem("scope", scope);
  closeConversation();
  resetList();
}

$("scope").addEventListener("change", (e) => switchScope(e.target.value));
$("add-scope").addEventListener("click", () => {
  const name = (prompt("Connection name") || "").trim();
  if (!name) return;
  const scopes = knownScopes();
  if (!scopes.includes(name)) { scopes.push(name); localStorage.setItem("scopes", JSON.stringify(scopes)); }
  renderScopes(name);
  switchScope(name);
});

// ---------------------------------------------------------------- sidebar list
function resetList() {
  state.listGeneration++;
  state.conversations.clear();
  state.order = [];
  state.cursor = null;
  state.listEnd = false;
  state.listLoading = false;
  renderList();
  loadMoreConversations();
}

async function loadMoreConversations() {
  if (state.listLoading || state.listEnd) return;
  state.listLoading = true;
  const generation = state.listGeneration;
  const params = new URLSearchParams({ limit: String(PAGE), pinned: "true" });
  if ($("show-archived").checked) params.set("archived", "include");
  if (state.cursor) params.set("cursor", state.cursor);
  try {
    const page = await api("GET", `${scopePath()}/conversations?${params}`);
    if (generation !== state.listGeneration) return;
    for (const conversation of page.items) {
      if (!state.conversations.has(conversation.id)) state.order.push(conversation.id);
      state.conversations.set(conversation.id, conversation);
    }
    state.cursor = page.nextCursor;
    state.listEnd = !page.nextCursor;
    renderList();
  } catch (error) {
    status(`Could not load conversations (${error.message})`);
  } finally {
    if (generation === state.listGeneration) state.listLoading = false;
  }
  // Fill the sidebar when a page does not make it scrollable.
  const list = $("list");
  if (generation === state.listGeneration && !state.listEnd && list.scrollHeight <= list.clientHeight) loadMoreConversations();
}

$("list").addEventListener("scroll", () => {
  const list = $("list");
  if (list.scrollTop + list.clientHeight >= list.scrollHeight - 80) loadMoreConversations();
});
$("show-archived").addEventListener("change", resetList);

function sortOrder() {
  // The sidebar order of the server: pinned first, then newest activity.
  state.order.sort((a, b) => {
    const x = state.conversations.get(a), y = state.conversations.get(b);
    if (x.pinned !== y.pinned) return x.pinned ? -1 : 1;
    if (x.updatedAt !== y.updatedAt) return x.updatedAt < y.updatedAt ? 1 : -1;
    return x.id < y.id ? 1 : -1;
  });
}

function upsertConversation(conversation, moveToTop) {
  if (conversation.scope !== state.scope) return;
  if (!state.conversations.has(conversation.id)) state.order.unshift(conversation.id);
  state.conversations.set(conversation.id, conversation);
  if (moveToTop) sortOrder();
  renderList();
  if (conversation.id === state.active) $("chat-title").textContent = titleOf(conversation);
}

const titleOf = (c) => c.title || "New chat";

function renderList() {
  if (state.renaming) return;
  const list = $("list");
  const items = state.order.map((id) => renderListItem(state.conversations.get(id)));
  if (state.listEnd && state.order.length === 0) {
    const end = document.createElement("li");
    end.className = "end"; end.textContent = "No conversations yet";
    items.push(end);
  }
  list.replaceChildren(...items);
}

function renderListItem(c) {
  const li = document.createElement("li");
  li.dataset.id = c.id;
  li.className = c.id === state.active ? "active" : "";
  li.setAttribute("data-testid", "conversation");
  if (c.pinned) {
    const mark = document.createElement("span");
    mark.className = "pin-mark"; mark.textContent = "★"; mark.title = "Pinned";
    li.append(mark);
  }
  const title = document.createElement("span");
  title.className = "title";
  title.textContent = titleOf(c) + (c.archived ? " (archived)" : "");
  title.title = titleOf(c);
  li.append(title);
  const actions = document.createElement("span");
  actions.className = "actions";
  const action = (label, text, handler) => {
    const button = document.createElement("button");
    button.type = "button"; button.textContent = text; button.title = label;
    button.setAttribute("aria-label", label);
    button.addEventListener("click", (e) => { e.stopPropagation(); handler(); });
    actions.append(button);
  };
  action("Rename", "✎", () => startRename(li, c));
  action(c.pinned ? "Unpin" : "Pin", c.pinned ? "★" : "☆", () => patch(c, { pinned: !c.pinned }));
  action(c.archived ? "Unarchive" : "Archive", c.archived ? "⇧" : "⇩", () => patch(c, { archived: !c.archived }));
  action("Delete", "✕", () => remove(c));
  li.append(actions);
  li.addEventListener("click", () => openConversation(c.id));
  return li;
}

function startRename(li, c) {
  const input = document.createElement("input");
  input.value = c.title || "";
  input.setAttribute("aria-label", "New title");
  let done = false;
  const finish = async (save) => {
    if (done) return;
    done = true;
    state.renaming = false;
    const title = input.value;
    if (save && title.trim() && title !== c.title) await patch(c, { title });
    else renderList();
  };
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") { e.preventDefault(); finish(true); }
    if (e.key === "Escape") finish(false);
  });
  input.addEventListener("blur", () => finish(true));
  input.addEventListener("click", (e) => e.stopPropagation());
  state.renaming = true;
  li.replaceChildren(input);
  input.focus(); input.select();
}

async function patch(c, change) {
  try {
    const updated = await api("PATCH", chatPath(c.id), change);
    if (updated.archived && !$("show-archived").checked) {
      dropFromList(updated.id);
      if (state.active === updated.id) closeConversation();
    } else {
      upsertConversation(updated, true);
    }
  } catch (error) {
    status(`Could not update (${error.message})`);
    renderList();
  }
}

function dropFromList(id) {
  state.conversations.delete(id);
  state.order = state.order.filter((x) => x !== id);
  renderList();
}

async function remove(c) {
  if (!confirm(`Delete “${titleOf(c)}”? This cannot be undone.`)) return;
  try {
    await api("DELETE", chatPath(c.id));
    dropFromList(c.id);
    if (state.active === c.id) closeConversation();
  } catch (error) {
    status(`Could not delete (${error.message})`);
  }
}

$("new-chat").addEventListener("click", async () => {
  try {
    const created = await api("POST", `${scopePath()}/conversations`, {});
    upsertConversation(created, true);
    await openConversation(created.id);
    $("input").focus();
  } catch (error) {
    status(`Could not create a conversation (${error.message})`);
  }
});

$("toggle-sidebar").addEventListener("click", () => document.body.classList.toggle("collapsed"));

// ---------------------------------------------------------------- the open conversation
function closeConversation() {
  state.openGeneration++;
  state.active = null;
  state.messages = [];
  state.olderCursor = null;
  $("chat-title").textContent = "";
  history.replaceState(null, "", location.pathname);
  renderMessages();
  renderList();
}

async function openConversation(id) {
  const generation = ++state.openGeneration;
  state.active = id;
  state.messages = [];
  state.olderCursor = null;
  const known = state.conversations.get(id);
  $("chat-title").textContent = known ? titleOf(known) : "";
  history.replaceState(null, "", `#${encodeURIComponent(state.scope)}/${id}`);
  renderList();
  renderMessages();
  try {
    const [conversation, page] = await Promise.all([
      api("GET", chatPath(id)),
      api("GET", `${chatPath(id)}/messages?limit=${PAGE}`),
    ]);
    if (generation !== state.openGeneration) return;
    if (conversation.id !== id || conversation.scope !== state.scope) {
      closeConversation();
      status("That link does not name a conversation of this connection");
      return;
    }
    upsertConversation(conversation, false);
    state.messages = page.items;
    state.olderCursor = page.hasMore && page.items.length ? page.items[0].seq : null;
    renderMessages(true);
  } catch (error) {
    if (generation === state.openGeneration) status(`Could not open the conversation (${error.message})`);
  }
}

async function loadOlderMessages() {
  if (!state.active || state.loadingOlder || state.olderCursor === null) return;
  state.loadingOlder = true;
  const generation = state.openGeneration;
  const box = $("messages");
  const fromBottom = box.scrollHeight - box.scrollTop;
  try {
    const page = await api("GET", `${chatPath(state.active)}/messages?limit=${PAGE}&before=${state.olderCursor}`);
    if (generation !== state.openGeneration) return;
    state.messages = page.items.concat(state.messages);
    state.olderCursor = page.hasMore && page.items.length ? page.items[0].seq : null;
    renderMessages();
    box.scrollTop = box.scrollHeight - fromBottom;
  } catch (error) {
    status(`Could not load older messages (${error.message})`);
  } finally {
    state.loadingOlder = false;
  }
}

$("messages").addEventListener("scroll", () => { if ($("messages").scrollTop < 60) loadOlderMessages(); });

function messageElement(role, content, extra) {
  const div = document.createElement("div");
  div.className = `message ${role}`;
  div.setAttribute("data-testid", `message-${role}`);
  const label = document.createElement("span");
  label.className = "role"; label.textContent = role;
  const body = document.createElement("span");
  body.className = "content"; body.textContent = content;
  div.append(label, body);
  for (const call of (extra && extra.toolCalls) || []) {
    const line = document.createElement("span");
    line.className = "tool-call";
    line.textContent = `→ ${call.name}(${JSON.stringify(call.arguments)})`;
    div.append(line);
  }
  return div;
}

function renderMessages(scrollToEnd) {
  const box = $("messages");
  const atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 40;
  if (!state.active) {
    const empty = document.createElement("div");
    empty.id = "empty"; empty.textContent = "Pick a conversation or start a new chat.";
    box.replaceChildren(empty);
    updateComposer();
    return;
  }
  const nodes = state.messages.map((m) => messageElement(m.role, m.content, { toolCalls: m.toolCalls }));
  const live = state.streams.get(state.active);
  if (live) {
    if (live.userMessage && !state.messages.some((m) => m.id === live.userMessage.id)) {
      nodes.push(messageElement("user", live.userMessage.content));
    }
    const reply = messageElement("assistant", live.text, { toolCalls: live.toolCalls });
    reply.classList.add(live.error ? "failed" : "streaming");
    if (live.error) {
      reply.classList.remove("streaming");
      const err = document.createElement("span");
      err.className = "error"; err.textContent = live.error;
      reply.append(err);
    }
    nodes.push(reply);
  }
  box.replaceChildren(...nodes);
  if (scrollToEnd || atEnd) box.scrollTop = box.scrollHeight;
  updateComposer();
}

function updateComposer() {
  const busy = !!(state.active && state.streams.get(state.active) && !state.streams.get(state.active).error);
  $("send").disabled = !state.active || busy;
  $("input").disabled = !state.active;
}

// ---------------------------------------------------------------- sending and streaming
$("input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("composer").requestSubmit(); }
});

$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("input").value;
  if (!text.trim() || !state.active || $("send").disabled) return;
  $("input").value = "";
  sendReply(state.scope, state.active, text);
});

async function sendReply(scope, id, text) {
  // The stream belongs to its conversation, not to the screen: switching away keeps it
  // running, and its events only ever touch its own conversation.
  const live = { text: "", toolCalls: [], userMessage: { id: crypto.randomUUID(), content: text }, error: null };
  state.streams.set(id, live);
  const shown = () => state.active === id && state.scope === scope;
  if (shown()) renderMessages(true);
  try {
    const response = await fetch(`${API}/${encodeURIComponent(scope)}/conversations/${id}/reply`, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "text/event-stream" },
      // The id makes a retried send idempotent.
      body: JSON.stringify({ id: live.userMessage.id, content: text }),
    });
    if (!response.ok) {
      let detail = response.statusText;
      try { const problem = await response.json(); detail = problem.detail || problem.title || detail; } catch (_) {}
      throw new Error(`${response.status}: ${detail}`);
    }
    for await (const { event, data } of sseEvents(response.body)) {
      const payload = data ? JSON.parse(data) : null;
      if (event === "message") {
        // The stored user message, with the conversation and its heuristic title.
        upsertIfCurrent(scope, payload.conversation, true);
      } else if (event === "delta") {
        live.text += payload.text;
      } else if (event === "toolCall") {
        live.toolCalls.push(payload);
      } else if (event === "done") {
        state.streams.delete(id);
        upsertIfCurrent(scope, payload.conversation, true);
        if (shown()) await refreshMessages(id);
        watchTitle(scope, id);
        return;
      } else if (event === "error") {
        throw new Error(payload.detail || payload.title || "the reply failed");
      }
      if (shown()) renderMessages();
    }
    throw new Error("the connection closed before the reply finished");
  } catch (error) {
    live.error = `Reply failed: ${error.message}`;
    if (shown()) await refreshMessages(id);
  } finally {
    if (shown()) renderMessages(true);
  }
}

function upsertIfCurrent(scope, conversation, moveToTop) {
  if (scope === state.scope) upsertConversation(conversation, moveToTop);
}

async function refreshMessages(id) {
  const page = await api("GET", `${chatPath(id)}/messages?limit=${PAGE}`);
  if (state.active !== id) return;
  state.messages = page.items;
  state.olderCursor = page.hasMore && page.items.length ? page.items[0].seq : null;
  const live = state.streams.get(id);
  if (live && live.error) state.streams.delete(id);
  renderMessages(true);
  if (live && live.error) status(live.error);
}

// The title is written in the background after the first reply: poll briefly.
async function watchTitle(scope, id) {
  for (const wait of [300, 700, 1500, 3000, 6000]) {
    await new Promise((resolve) => setTimeout(resolve, wait));
    if (scope !== state.scope) return;
    try {
      const conversation = await api("GET", `/${encodeURIComponent(scope)}/conversations/${id}`);
      upsertIfCurrent(scope, conversation, false);
      if (conversation.titleSource === "generated" || conversation.titleSource === "user") return;
    } catch (_) { return; }
  }
}

// Server-Sent Events over a fetch body (EventSource cannot POST).
async function* sseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message", data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? "" : line.slice(colon + 1);
        if (val.startsWith(" ")) val = val.slice(1);
        if (field === "event") event = val;
        else if (field === "data") data.push(val);
      }
      if (data.length || event !== "message") yield { event, data: data.join("\n") };
    }
  }
}

// ---------------------------------------------------------------- start
// A link is #<scope>/<conversation id>, each part percent-encoded as openConversation
// writes it. Anything else (a malformed escape, more parts, an id that is not a UUID,
// a scope the API refuses) is ignored and never sent on.
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const validScope = (scope) =>
  scope.length > 0 && new TextEncoder().encode(scope).length <= 256 && !/[\u0000-\u001f\u007f-\u009f]/.test(scope);

function parseLink(hash) {
  const parts = hash.replace(/^#/, "").split("/");
  if (parts.length > 2) return null;
  let scope, id = null;
  try {
    scope = decodeURIComponent(parts[0]);
    if (parts.length === 2) id = decodeURIComponent(parts[1]);
  } catch (_) {
    return null;
  }
  if (!validScope(scope) || (id !== null && !UUID.test(id))) return null;
  return { scope, id: id && id.toLowerCase() };
}

(function start() {
  const hash = location.hash;
  const link = hash.length > 1 ? parseLink(hash) : null;
  const scopes = knownScopes();
  let scope = (link && link.scope) || localStorage.getItem("scope") || scopes[0];
  if (!scopes.includes(scope)) { scopes.push(scope); localStorage.setItem("scopes", JSON.stringify(scopes)); }
  renderScopes(scope);
  switchScope(scope);
  if (link && link.id) openConversation(link.id);
  else if (hash.length > 1 && !link) status("Ignored a link that does not name a conversation");
})();
