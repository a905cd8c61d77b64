"use strict";
// The sidebar page. What users type is put on the page with textContent, never
// innerHTML; what the model writes goes through Markdown.render (markdown.js), which
// shows raw HTML as text and sanitises the rest.
const API = "/api/v1/connections";
const SCOPES = "/api/v1/scopes";
const PAGE = 30;
// Rendering budgets: the first screen of a conversation renders its newest messages
// for at most FIRST_SCREEN_MS, the rest of the page (and older pages) follow
// TASK_MS of rendering per task, so that no task blocks the page for long.
const FIRST_SCREEN_MS = 8;
const TASK_MS = 5;
const $ = (id) => document.getElementById(id);
const narrow = window.matchMedia("(max-width: 760px)");

const state = {
  scope: null,
  serverScopes: [],           // from GET /api/v1/scopes
  conversations: new Map(),   // id -> conversation (current scope)
  order: [],                  // ids in list order
  cursor: null,
  listEnd: false,
  listLoading: false,
  listGeneration: 0,          // bumps on every list reset; stale pages are dropped
  view: "chats",              // "chats" or "archive"
  selecting: false,
  selected: new Set(),
  search: "",                 // the search shown in the sidebar, "" for the list
  searchGeneration: 0,
  active: null,               // id of the open conversation
  messages: [],               // the active path's loaded messages, oldest first
  olderCursor: null,          // seq of the oldest loaded message, when older exist
  older: null,                // { generation, promise } of the older messages being shown
  checked: null,              // id of the open conversation once the server confirmed it
  openGeneration: 0,          // bumps on every switch; stale loads are dropped
  runs: new Map(),            // conversation id -> the run this page follows
  renaming: false,
};

class ApiError extends Error {
  constructor(status, detail) { super(`${status}: ${detail}`); this.status = status; }
}

async function problemOf(response) {
  let detail = response.statusText;
  try { const problem = await response.json(); detail = problem.detail || problem.title || detail; } catch (_) {}
  return new ApiError(response.status, detail);
}

async function api(method, path, body, extra = {}) {
  const init = { method, headers: {}, ...extra };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(API + path, init);
  if (!response.ok) throw await problemOf(response);
  return response.status === 204 ? null : response.json();
}

const scopePathOf = (scope) => "/" + encodeURIComponent(scope);
const scopePath = () => scopePathOf(state.scope);
const chatPathOf = (scope, id) => `${scopePathOf(scope)}/conversations/${id}`;
const chatPath = (id) => chatPathOf(state.scope, id);
const el = (tag, props = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-") || key.startsWith("aria-") || key === "role" || key === "title") node.setAttribute(key, value);
    else node[key] = value;
  }
  node.append(...children);
  return node;
};

// A status line goes away after a while: it says what just happened.
let statusTimer = null;
function status(text) {
  $("status").textContent = text || "";
  clearTimeout(statusTimer);
  if (text) statusTimer = setTimeout(() => { $("status").textContent = ""; }, 8000);
}

// ---------------------------------------------------------------- scopes
// The server's list (--scopes) first, then the ones typed in this browser.
function knownScopes() {
  let saved = [];
  try { const parsed = JSON.parse(localStorage.getItem("scopes")); if (Array.isArray(parsed)) saved = parsed.filter((s) => typeof s === "string"); } catch (_) {}
  const all = [...state.serverScopes, ...saved.filter((s) => !state.serverScopes.includes(s))];
  return all.length ? all : ["default"];
}

function rememberScope(name) {
  if (knownScopes().includes(name)) return;
  let saved = [];
  try { saved = JSON.parse(localStorage.getItem("scopes")) || []; } catch (_) {}
  saved.push(name);
  localStorage.setItem("scopes", JSON.stringify(saved));
}

function renderScopes(selected) {
  $("scope").replaceChildren(...knownScopes().map((name) => el("option", { value: name, text: name })));
  $("scope").value = selected;
}

function switchScope(scope) {
  state.scope = scope;
  localStorage.setItem("scope", scope);
  closeConversation();
  clearSearch();
  state.selected.clear();
  resetList();
}

$("scope").addEventListener("change", (e) => switchScope(e.target.value));
$("add-scope").addEventListener("click", () => {
  const name = (prompt("Connection name") || "").trim();
  if (!name) return;
  if (!validScope(name)) { status("That is not a valid connection name"); return; }
  rememberScope(name);
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
  const params = new URLSearchParams({ limit: String(PAGE) });
  if (state.view === "archive") params.set("archived", "only");
  else params.set("pinned", "true");
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
  if (generation === state.listGeneration && !state.listEnd && !state.search && list.scrollHeight <= list.clientHeight) loadMoreConversations();
}

$("list").addEventListener("scroll", () => {
  const list = $("list");
  if (!state.search && list.scrollTop + list.clientHeight >= list.scrollHeight - 80) loadMoreConversations();
});

function sortOrder() {
  // The sidebar order of the server: pinned first, then newest activity.
  state.order.sort((a, b) => {
    const x = state.conversations.get(a), y = state.conversations.get(b);
    if (state.view !== "archive" && x.pinned !== y.pinned) return x.pinned ? -1 : 1;
    if (x.updatedAt !== y.updatedAt) return x.updatedAt < y.updatedAt ? 1 : -1;
    return x.id < y.id ? 1 : -1;
  });
}

function belongsInList(c) {
  return state.view === "archive" ? c.archived : !c.archived;
}

function upsertConversation(conversation, moveToTop) {
  if (conversation.scope !== state.scope) return;
  if (!belongsInList(conversation)) {
    if (state.conversations.has(conversation.id)) dropFromList(conversation.id);
  } else {
    const known = state.conversations.has(conversation.id);
    if (!known) state.order.unshift(conversation.id);
    state.conversations.set(conversation.id, conversation);
    if (moveToTop || !known) sortOrder();
    renderList();
  }
  if (conversation.id === state.active) showConversationHeader(conversation);
}

const titleOf = (c) => c.title || "New chat";

// Today, Yesterday, Previous 7 days, Previous 30 days, then by month.
function dateGroup(c) {
  if (c.pinned && state.view !== "archive") return "Pinned";
  const day = (d) => new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();
  const at = new Date(c.updatedAt);
  const days = Math.round((day(new Date()) - day(at)) / 86_400_000);
  if (days <= 0) return "Today";
  if (days === 1) return "Yesterday";
  if (days <= 7) return "Previous 7 days";
  if (days <= 30) return "Previous 30 days";
  return at.toLocaleDateString(undefined, { month: "long", year: "numeric" });
}

function renderList() {
  if (state.renaming || state.search) return;
  const items = [];
  let group = null;
  for (const id of state.order) {
    const c = state.conversations.get(id);
    const label = dateGroup(c);
    if (label !== group) {
      group = label;
      items.push(el("li", { class: "group" }, el("h2", { text: label })));
    }
    items.push(renderListItem(c));
  }
  if (state.listEnd && state.order.length === 0) {
    items.push(el("li", { class: "end", text: state.view === "archive" ? "Nothing archived" : "No conversations yet" }));
  }
  $("list").replaceChildren(...items);
  renderBulkBar();
}

function renderListItem(c) {
  const li = el("li", { class: c.id === state.active ? "active" : "", "data-testid": "conversation" });
  li.dataset.id = c.id;
  if (state.selecting) {
    const box = el("input", { type: "checkbox", checked: state.selected.has(c.id), "aria-label": `Select ${titleOf(c)}` });
    box.addEventListener("change", () => { box.checked ? state.selected.add(c.id) : state.selected.delete(c.id); renderBulkBar(); });
    li.append(box);
  }
  if (c.pinned) li.append(el("span", { class: "pin-mark", text: "★", title: "Pinned", "aria-hidden": "true" }));
  const open = el("button", { type: "button", class: "open", title: titleOf(c) }, el("span", { class: "title", text: titleOf(c) }));
  if (c.id === state.active) open.setAttribute("aria-current", "page");
  open.addEventListener("click", () => openConversation(c.id));
  open.addEventListener("dblclick", () => startRename(li, c));
  open.addEventListener("keydown", (e) => { if (e.key === "F2") { e.preventDefault(); startRename(li, c); } });
  li.append(open);
  const actions = el("span", { class: "actions" });
  const action = (label, text, handler) => {
    const button = el("button", { type: "button", text, title: label, "aria-label": label });
    button.addEventListener("click", (e) => { e.stopPropagation(); handler(); });
    actions.append(button);
  };
  action("Rename", "✎", () => startRename(li, c));
  action(c.pinned ? "Unpin" : "Pin", c.pinned ? "★" : "☆", () => patch(c, { pinned: !c.pinned }));
  action(c.archived ? "Unarchive" : "Archive", c.archived ? "⇧" : "⇩", () => patch(c, { archived: !c.archived }));
  action("Delete", "✕", () => remove(c));
  li.append(actions);
  return li;
}

function startRename(li, c) {
  const input = el("input", { value: c.title || "", "aria-label": "New title", class: "rename" });
  let done = false;
  const finish = async (save) => {
    if (done) return;
    done = true;
    state.renaming = false;
    const title = input.value;
    if (save && title.trim() && title !== c.title) await patch(c, { title });
    else renderList();
    const again = $("list").querySelector(`li[data-id="${c.id}"] .open`);
    if (again) again.focus();
  };
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") { e.preventDefault(); finish(true); }
    if (e.key === "Escape") { e.preventDefault(); e.stopPropagation(); finish(false); }
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
    if (updated.archived !== c.archived && state.active === updated.id && !belongsInList(updated)) closeConversation();
    upsertConversation(updated, true);
  } catch (error) {
    status(`Could not update (${error.message})`);
    renderList();
  }
}

function dropFromList(id) {
  state.conversations.delete(id);
  state.selected.delete(id);
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

async function newChat() {
  try {
    if (state.view === "archive") setView("chats");
    const created = await api("POST", `${scopePath()}/conversations`, {});
    upsertConversation(created, true);
    await openConversation(created.id);
    $("input").focus();
  } catch (error) {
    status(`Could not create a conversation (${error.message})`);
  }
}
$("new-chat").addEventListener("click", newChat);

// Archive view and bulk selection.
function setView(view) {
  state.view = view;
  $("archive-view").setAttribute("aria-pressed", String(view === "archive"));
  $("archive-view").textContent = view === "archive" ? "← Chats" : "Archive";
  state.selected.clear();
  clearSearch();
  resetList();
}
$("archive-view").addEventListener("click", () => setView(state.view === "archive" ? "chats" : "archive"));

$("select-mode").addEventListener("click", () => {
  state.selecting = !state.selecting;
  state.selected.clear();
  $("select-mode").setAttribute("aria-pressed", String(state.selecting));
  renderList();
});

function renderBulkBar() {
  const bar = $("bulk-bar");
  bar.hidden = !state.selecting;
  $("bulk-count").textContent = `${state.selected.size} selected`;
  bar.querySelector("[data-bulk=archive]").hidden = state.view === "archive";
  bar.querySelector("[data-bulk=unarchive]").hidden = state.view !== "archive";
  for (const button of bar.querySelectorAll("button")) button.disabled = state.selected.size === 0;
}

$("bulk-bar").addEventListener("click", async (e) => {
  const action = e.target.closest("button") && e.target.closest("button").dataset.bulk;
  if (!action || state.selected.size === 0) return;
  const ids = [...state.selected];
  if (action === "delete" && !confirm(`Delete ${ids.length} conversation(s)? This cannot be undone.`)) return;
  try {
    const result = await api("POST", `${scopePath()}/conversations/bulk`, { action, ids });
    const failed = result.items.filter((item) => item.status !== "ok").length;
    status(failed ? `${failed} of ${ids.length} could not be changed` : `${ids.length} conversation(s): ${action} done`);
    if (state.active && ids.includes(state.active) && action !== "unarchive") closeConversation();
    state.selected.clear();
    resetList();
  } catch (error) {
    status(`Could not ${action} (${error.message})`);
  }
});

// ---------------------------------------------------------------- search
let searchTimer = null;
$("search").addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(runSearch, 150);
});
$("search").addEventListener("keydown", (e) => {
  if (e.key === "Escape") { e.preventDefault(); e.stopPropagation(); clearSearch(); renderList(); $("search").blur(); }
  if (e.key === "ArrowDown") { e.preventDefault(); const first = $("list").querySelector("button.open, a.hit"); if (first) first.focus(); }
});

function clearSearch() {
  state.search = "";
  state.searchGeneration++;
  $("search").value = "";
}

async function runSearch() {
  const q = $("search").value.trim();
  const generation = ++state.searchGeneration;
  if (!q) { state.search = ""; renderList(); return; }
  state.search = q;
  const params = new URLSearchParams({ q, limit: "20", archived: state.view === "archive" ? "only" : "include" });
  try {
    const results = await api("GET", `${scopePath()}/search?${params}`);
    if (generation !== state.searchGeneration) return;
    renderSearch(results.items);
  } catch (error) {
    if (generation === state.searchGeneration) status(`Could not search (${error.message})`);
  }
}

// A snippet with its highlights (offsets in characters) marked up as <mark>.
function snippetNode(match) {
  const chars = Array.from(match.snippet);
  const node = el("span", { class: "snippet" });
  let at = 0;
  for (const { start, end } of [...match.highlights].sort((a, b) => a.start - b.start)) {
    if (start < at) continue;
    node.append(chars.slice(at, start).join(""), el("mark", { text: chars.slice(start, end).join("") }));
    at = end;
  }
  node.append(chars.slice(at).join(""));
  return node;
}

function renderSearch(hits) {
  const items = hits.map((hit) => {
    const c = hit.conversation;
    const li = el("li", { class: "search-hit", "data-testid": "search-hit" });
    li.dataset.id = c.id;
    const first = hit.matches.find((m) => m.messageId) || null;
    const open = el("button", { type: "button", class: "open" }, el("span", { class: "title", text: titleOf(c) }));
    for (const match of hit.matches) open.append(snippetNode(match));
    open.addEventListener("click", () => {
      clearSearch();
      renderList();
      openConversation(c.id, { at: first && first.messageId });
      closeDrawer();
    });
    li.append(open);
    return li;
  });
  if (!items.length) items.push(el("li", { class: "end", text: "Nothing found" }));
  $("list").replaceChildren(...items);
}

// ---------------------------------------------------------------- drawer and sidebar
function sidebarShown() {
  return narrow.matches ? document.body.classList.contains("drawer-open") : !document.body.classList.contains("collapsed");
}
function toggleSidebar() {
  if (narrow.matches) document.body.classList.toggle("drawer-open");
  else document.body.classList.toggle("collapsed");
  syncSidebar();
  if (sidebarShown()) $("new-chat").focus();
}
function closeDrawer() {
  if (!document.body.classList.contains("drawer-open")) return;
  document.body.classList.remove("drawer-open");
  syncSidebar();
}
function syncSidebar() {
  const shown = sidebarShown();
  $("toggle-sidebar").setAttribute("aria-expanded", String(shown));
  $("backdrop").hidden = !(narrow.matches && shown);
  // A hidden sidebar takes no focus.
  $("sidebar").inert = !shown;
}
$("toggle-sidebar").addEventListener("click", toggleSidebar);
$("close-drawer").addEventListener("click", () => { closeDrawer(); $("toggle-sidebar").focus(); });
$("backdrop").addEventListener("click", closeDrawer);
narrow.addEventListener("change", syncSidebar);

// ---------------------------------------------------------------- the open conversation
function showConversationHeader(c) {
  $("chat-title").textContent = c ? titleOf(c) : "";
  const usage = $("usage");
  usage.hidden = !c;
  if (!c) return;
  const u = c.usage || { promptTokens: 0, completionTokens: 0, totalTokens: 0 };
  const row = (name, value) => [el("dt", { text: name }), el("dd", { text: String(value) })];
  $("usage-figures").replaceChildren(
    ...row("Prompt tokens", u.promptTokens.toLocaleString()),
    ...row("Completion tokens", u.completionTokens.toLocaleString()),
    ...row("Total tokens", u.totalTokens.toLocaleString()),
    ...row("Messages stored", c.messageCount.toLocaleString()),
    ...row("Started", new Date(c.createdAt).toLocaleString()),
  );
  usage.querySelector("summary").title = `${u.totalTokens.toLocaleString()} tokens in all`;
}

function closeConversation() {
  state.openGeneration++;
  state.active = null;
  state.messages = [];
  state.olderCursor = null;
  showConversationHeader(null);
  history.replaceState(null, "", location.pathname);
  renderMessages();
  renderList();
}

async function openConversation(id, { at = null } = {}) {
  const generation = ++state.openGeneration;
  const scope = state.scope;
  if (state.active !== id) nodeCache.clear();
  state.active = id;
  state.checked = null;
  state.messages = [];
  state.olderCursor = null;
  const known = state.conversations.get(id);
  showConversationHeader(known || null);
  history.replaceState(null, "", `#${encodeURIComponent(scope)}/${id}`);
  renderList();
  renderMessages();
  closeDrawer();
  try {
    // The messages are shown as soon as they come; the conversation (its run in
    // progress, its usage) follows. Both are read under this scope: another scope's
    // conversation is not found.
    const conversationRead = api("GET", chatPath(id));
    conversationRead.catch(() => {});
    const page = await api("GET", `${chatPath(id)}/messages?limit=${PAGE}`);
    if (generation !== state.openGeneration) return;
    state.olderCursor = page.hasMore && page.items.length ? page.items[0].seq : null;
    showPage(page.items, generation);
    performance.mark("conversation-shown");
    window.dispatchEvent(new CustomEvent("conversation-shown", { detail: id }));
    const conversation = await conversationRead;
    if (generation !== state.openGeneration) return;
    if (conversation.id !== id || conversation.scope !== scope) {
      closeConversation();
      status("That link does not name a conversation of this connection");
      return;
    }
    upsertConversation(conversation, false);
    showConversationHeader(conversation);
    state.checked = id;
    // A run in progress (another tab, or this one before a reload): follow it.
    if (conversation.activeRunId && !state.runs.has(id)) attachRun(scope, id, conversation.activeRunId);
    else refreshContinue();
    if (at) await scrollToMessage(at, generation);
  } catch (error) {
    if (generation === state.openGeneration) status(`Could not open the conversation (${error.message})`);
  }
}

const nextTask = () => new Promise((resolve) => setTimeout(resolve, 0));

// The tool each tool call id asked for, over every message seen (a result may be
// rendered before its call when pages are shown newest first).
const toolNameById = new Map();
function registerTools(items) {
  for (const m of items) for (const call of m.toolCalls || []) toolNameById.set(call.id, call.name);
}

// Shows a page of the path, newest first: what renders within the first screen's
// budget at once, the rest a task at a time above it.
function showPage(items, generation) {
  registerTools(items);
  const started = performance.now();
  let start = items.length;
  while (start > 0 && (start === items.length || performance.now() - started < FIRST_SCREEN_MS)) messageNode(items[--start]);
  state.messages = items.slice(start);
  renderMessages({ scrollToEnd: true });
  if (start > 0) trackOlder(generation, prependMessages(items.slice(0, start), generation));
}

function trackOlder(generation, promise) {
  const entry = { generation, promise };
  state.older = entry;
  promise.finally(() => { if (state.older === entry) state.older = null; });
  return promise;
}
const olderBusy = () => !!state.older && state.older.generation === state.openGeneration;

// Loads older pages until `messageId` is on the page (or the path has no more), then
// scrolls to it and marks it.
async function scrollToMessage(messageId, generation) {
  for (let pages = 0; pages < 40 && !state.messages.some((m) => m.id === messageId) && (olderBusy() || state.olderCursor !== null); pages++) {
    await loadOlderMessages();
    if (generation !== state.openGeneration) return;
  }
  const node = $("messages").querySelector(`.message[data-id="${messageId}"]`);
  if (!node) { status("That message is on another version of this conversation"); return; }
  node.scrollIntoView({ block: "center" });
  node.classList.add("found");
  node.tabIndex = -1;
  node.focus({ preventScroll: true });
  setTimeout(() => node.classList.remove("found"), 2500);
}

function loadOlderMessages() {
  if (olderBusy()) return state.older.promise;
  if (!state.active || state.olderCursor === null) return Promise.resolve();
  const generation = state.openGeneration;
  const id = state.active;
  return trackOlder(generation, (async () => {
    const page = await api("GET", `${chatPath(id)}/messages?limit=${PAGE}&before=${state.olderCursor}`);
    if (generation !== state.openGeneration) return;
    state.olderCursor = page.hasMore && page.items.length ? page.items[0].seq : null;
    registerTools(page.items);
    await prependMessages(page.items, generation);
  })().catch((error) => status(`Could not load older messages (${error.message})`)));
}

// Older messages go in newest first, TASK_MS of rendering per task, so that a long
// page never blocks the page; the view stays where the reader is.
async function prependMessages(items, generation) {
  const box = $("messages");
  let end = items.length;
  while (end > 0) {
    await nextTask();
    if (generation !== state.openGeneration) return;
    const started = performance.now();
    let start = end;
    while (start > 0 && (start === end || performance.now() - started < TASK_MS)) messageNode(items[--start]);
    const batch = items.slice(start, end);
    const fromBottom = box.scrollHeight - box.scrollTop;
    const first = box.querySelector(".message");
    const nodes = batch.map((m) => messageNode(m));
    if (first) first.before(...nodes); else box.prepend(...nodes);
    state.messages = batch.concat(state.messages);
    box.scrollTop = box.scrollHeight - fromBottom;
    end = start;
  }
}

$("messages").addEventListener("scroll", () => { if ($("messages").scrollTop < 200) loadOlderMessages(); });

function prettyJson(value) {
  try { return JSON.stringify(typeof value === "string" ? JSON.parse(value) : value, null, 2); } catch (_) { return null; }
}

function toolStep(summary, body) {
  return el("details", { class: "tool-step" }, el("summary", { text: summary }), body);
}

function codeBlock(text, language) {
  return Markdown.render("```" + language + "\n" + text.replace(/```/g, "``\u200b`") + "\n```");
}

// The content of one message: a user's as typed, the model's as Markdown, tool steps
// folded.
function fillContent(m, content, { highlight = true } = {}) {
  if (m.role === "user" || m.role === "system") {
    content.textContent = m.content;
  } else if (m.role === "tool") {
    const name = toolNameById.get(m.toolCallId) || "tool";
    const json = prettyJson(m.content);
    const body = el("div", { class: "tool-result" }, json !== null ? codeBlock(json, "json") : Markdown.render(m.content));
    content.replaceChildren(toolStep(`Result of ${name}`, body));
  } else {
    content.replaceChildren(Markdown.render(m.content, { highlight }));
    for (const call of m.toolCalls || []) {
      const args = prettyJson(call.arguments) || String(call.arguments);
      const sql = call.arguments && typeof call.arguments === "object" && typeof call.arguments.sql === "string" ? call.arguments.sql : null;
      content.append(toolStep(`Tool call: ${call.name}`, sql !== null ? codeBlock(sql, "sql") : codeBlock(args, "json")));
    }
  }
}

// The element of each message of the open conversation, by what it shows: a message
// is rendered once, also across refreshes of the page after a run.
const nodeCache = new Map();
const nodeKey = (m) => `${m.id}|${m.siblingIndex}|${m.siblingCount}|${m.content.length}|${(m.toolCalls || []).length}|${(m.metadata && m.metadata.finishReason) || ""}`;

function messageNode(m) {
  const key = nodeKey(m);
  const cached = nodeCache.get(key);
  if (cached) return cached;
  const node = el("article", { class: `message ${m.role}`, "data-testid": `message-${m.role}`, "aria-label": m.role === "user" ? "You" : m.role });
  node.dataset.id = m.id;
  const content = el("div", { class: m.role === "user" || m.role === "system" ? "content" : "content markdown" });
  node.append(el("span", { class: "role", text: m.role === "user" ? "you" : m.role, "aria-hidden": "true" }), content);
  fillContent(m, content);
  const finish = m.metadata && m.metadata.finishReason;
  if (finish === "cancelled") node.append(el("span", { class: "badge", text: "Stopped" }));
  if (finish === "error") node.append(el("span", { class: "badge error", text: "The answer failed here" }));
  if (m.role === "user" || m.role === "assistant") node.append(messageControls(m));
  nodeCache.set(key, node);
  return node;
}

function messageControls(m) {
  const bar = el("div", { class: "controls", role: "group", "aria-label": "Message actions" });
  const button = (action, text, label) => el("button", { type: "button", text, title: label, "aria-label": label, "data-action": action });
  if (m.siblingCount > 1) {
    const position = el("span", { class: "versions", text: `${m.siblingIndex + 1}/${m.siblingCount}`, title: `Version ${m.siblingIndex + 1} of ${m.siblingCount}` });
    const prev = button("version-prev", "‹", `Previous version (this is ${m.siblingIndex + 1} of ${m.siblingCount})`);
    const next = button("version-next", "›", `Next version (this is ${m.siblingIndex + 1} of ${m.siblingCount})`);
    prev.disabled = m.siblingIndex === 0;
    next.disabled = m.siblingIndex + 1 >= m.siblingCount;
    bar.append(prev, position, next);
  }
  if (m.role === "user") bar.append(button("edit", "Edit", "Edit this question"));
  if (m.role === "assistant") {
    bar.append(button("copy", "Copy", "Copy this answer"), button("regenerate", "Regenerate", "Regenerate this answer"));
  }
  bar.append(button("fork", "Fork", "Fork a new chat from here"), button("delete-message", "Delete", "Delete this message and what follows"));
  return bar;
}

// Where a run shows: the messages the run keeps (a new question keeps them all; an
// edit or a regenerate only those up to where the new version branches off).
function visibleMessages() {
  const run = state.runs.get(state.active);
  if (!run || run.scope !== state.scope || run.keepUpTo === undefined) return state.messages;
  if (run.keepUpTo === null) return [];
  const at = state.messages.findIndex((m) => m.id === run.keepUpTo);
  return at < 0 ? state.messages : state.messages.slice(0, at + 1);
}

function renderMessages({ scrollToEnd = false } = {}) {
  const box = $("messages");
  const atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 40;
  if (!state.active) {
    box.replaceChildren(el("div", { id: "empty", text: "Pick a conversation or start a new chat." }));
    updateComposer();
    return;
  }
  const nodes = visibleMessages().map((m) => messageNode(m));
  const run = state.runs.get(state.active);
  if (run && run.scope === state.scope) nodes.push(...runNodes(run));
  const after = continueNode(run);
  if (after) nodes.push(after);
  box.replaceChildren(...nodes);
  if (scrollToEnd || atEnd) box.scrollTop = box.scrollHeight;
  updateComposer();
}

// "Continue" when the path ends with tool results or an unanswered question.
function continueNode(run) {
  if ((run && !run.error) || state.checked !== state.active || olderBusy() && state.messages.length === 0) return null;
  const last = state.messages[state.messages.length - 1];
  if (!last) return null;
  if (last.role !== "tool" && last.role !== "user") return null;
  return el("div", { class: "continue" },
    el("span", { text: last.role === "tool" ? "The tools have answered." : "This question has no answer yet." }),
    el("button", { type: "button", text: "Continue", "data-action": "continue", title: "Let the model go on from here" }));
}

function refreshContinue() {
  const box = $("messages");
  for (const old of box.querySelectorAll(".continue")) old.remove();
  const node = continueNode(state.runs.get(state.active));
  if (node) box.append(node);
}

function updateComposer() {
  const run = state.active && state.runs.get(state.active);
  const busy = !!(run && run.scope === state.scope && !run.error);
  $("send").disabled = !state.active || busy;
  $("send").hidden = busy;
  $("stop").hidden = !busy;
  $("stop").disabled = !busy || !run.runId || run.stopping;
  $("input").disabled = !state.active;
}

// ---------------------------------------------------------------- runs
// A run belongs to its conversation, not to the screen: switching away (or to another
// scope) keeps it going, and its events only ever touch its own conversation.
function newRun(scope, id, { question = null, keepUpTo } = {}) {
  const run = {
    scope, id, runId: null, lastEventId: null, text: "", toolCalls: [], stored: [],
    question, keepUpTo, error: null, stopping: false, node: null, frame: 0,
  };
  state.runs.set(id, run);
  return run;
}

const shownRun = (run) => state.active === run.id && state.scope === run.scope && state.runs.get(run.id) === run;

// The run's own nodes: its question, the messages it stored, the streaming answer.
function runNodes(run) {
  const nodes = [];
  const storedIds = new Set(visibleMessages().map((m) => m.id));
  if (run.question && !storedIds.has(run.question.id)) nodes.push(messageNode(run.question));
  registerTools(run.stored);
  for (const m of run.stored) if (!storedIds.has(m.id) && m.role !== "user") nodes.push(messageNode(m));
  nodes.push(streamingNode(run));
  return nodes;
}

function streamingNode(run) {
  if (!run.node) {
    run.node = el("article", { class: "message assistant streaming", "data-testid": "message-assistant", "aria-label": "assistant", "aria-busy": "true" });
    run.content = el("div", { class: "content markdown" });
    run.node.append(el("span", { class: "role", text: "assistant", "aria-hidden": "true" }), run.content);
  }
  paintRun(run);
  return run.node;
}

// Only the streaming message re-renders, at most once per animation frame.
function scheduleRunPaint(run) {
  if (run.frame || !shownRun(run)) return;
  run.frame = requestAnimationFrame(() => {
    run.frame = 0;
    if (!shownRun(run)) return;
    const box = $("messages");
    const atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 40;
    paintRun(run);
    if (atEnd) box.scrollTop = box.scrollHeight;
  });
}

function paintRun(run) {
  if (!run.content) return;
  run.content.replaceChildren(Markdown.render(run.text, { highlight: false }));
  for (const call of run.toolCalls) run.content.append(el("div", { class: "tool-call", text: `→ ${call.name}(${JSON.stringify(call.arguments)})` }));
  run.node.classList.toggle("streaming", !run.error);
  run.node.classList.toggle("failed", !!run.error);
  run.node.setAttribute("aria-busy", String(!run.error));
  if (run.error) run.content.append(el("span", { class: "error", text: run.error }));
}

async function startRun(scope, id, body, display) {
  if (state.runs.has(id) && !state.runs.get(id).error) return;
  const run = newRun(scope, id, display);
  if (shownRun(run)) renderMessages({ scrollToEnd: true });
  try {
    const response = await fetch(`${API}${chatPathOf(scope, id)}/reply`, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "text/event-stream" },
      body: JSON.stringify(body),
    });
    if (!response.ok) throw await problemOf(response);
    await followRun(run, response);
  } catch (error) {
    await runFailed(run, error);
  }
}

// Follows a run this page did not start (after a reload, or from another tab).
async function attachRun(scope, id, runId) {
  const run = newRun(scope, id);
  run.runId = runId;
  if (shownRun(run)) renderMessages({ scrollToEnd: true });
  try {
    await followRun(run, await eventsOf(run));
  } catch (error) {
    await runFailed(run, error);
  }
}

async function eventsOf(run) {
  const headers = { accept: "text/event-stream" };
  if (run.lastEventId !== null) headers["last-event-id"] = run.lastEventId;
  const response = await fetch(`${API}${chatPathOf(run.scope, run.id)}/runs/${run.runId}/events`, { headers });
  if (!response.ok) throw await problemOf(response);
  return response;
}

async function followRun(run, response) {
  for (let attempt = 0; ; attempt++) {
    try {
      for await (const { event, data, id } of sseEvents(response.body)) {
        if (id) run.lastEventId = id;
        if (await onRunEvent(run, event, data ? JSON.parse(data) : null)) return;
      }
      throw new Error("the connection closed before the reply finished");
    } catch (error) {
      // A broken stream of a known run: pick it up where it broke.
      if (error instanceof ApiError || !run.runId || attempt >= 3) throw error;
      await new Promise((resolve) => setTimeout(resolve, 300 * (attempt + 1)));
      response = await eventsOf(run);
    }
  }
}

// Handles one event; true when the run has ended.
async function onRunEvent(run, event, payload) {
  if (event === "run") {
    run.runId = payload.id;
    if (shownRun(run)) updateComposer();
  } else if (event === "message") {
    upsertIfCurrent(run.scope, payload.conversation, true);
    const m = payload.message;
    if (m.role === "user") run.question = m;
    else if (m.role === "assistant" || m.role === "tool") {
      // Text so far is now stored in this message (tool calls, or a stopped answer).
      run.stored.push(m);
      if (m.role === "assistant") { run.text = ""; run.toolCalls = []; }
    }
    if (shownRun(run)) renderMessages();
  } else if (event === "delta") {
    run.text += payload.text;
    scheduleRunPaint(run);
  } else if (event === "toolCall") {
    run.toolCalls.push(payload);
    scheduleRunPaint(run);
  } else if (event === "done") {
    await runEnded(run, payload);
    return true;
  } else if (event === "error") {
    throw new ApiError(payload.status || 500, payload.detail || payload.title || "the reply failed");
  }
  return false;
}

async function runEnded(run, finished) {
  if (state.runs.get(run.id) === run) state.runs.delete(run.id);
  upsertIfCurrent(run.scope, finished.conversation, true);
  const outcome = finished.run.status;
  if (shownRun(run) || (state.active === run.id && state.scope === run.scope)) {
    await refreshMessages(run.scope, run.id);
    if (outcome === "cancelled") status("Stopped: the partial answer is kept");
    else if (outcome === "failed") status(`The answer failed (${(finished.run.error && finished.run.error.code) || "error"})`);
    else if (outcome === "requires_action") status("The model asked for tools this page cannot run");
    else status("Answer finished");
  }
  watchTitle(run.scope, run.id);
}

async function runFailed(run, error) {
  run.error = `Reply failed: ${error.message}`;
  if (state.active === run.id && state.scope === run.scope) {
    try { await refreshMessages(run.scope, run.id); } catch (_) {}
    if (state.runs.get(run.id) === run) state.runs.delete(run.id);
    renderMessages({ scrollToEnd: true });
    status(run.error);
  } else if (state.runs.get(run.id) === run) {
    state.runs.delete(run.id);
  }
}

async function stopRun() {
  const run = state.active && state.runs.get(state.active);
  if (!run || !run.runId || run.stopping || run.error) return;
  run.stopping = true;
  updateComposer();
  try {
    await api("POST", `${chatPathOf(run.scope, run.id)}/runs/${run.runId}/cancel`, {});
  } catch (error) {
    // It may have ended meanwhile: its `done` event says how.
    if (!(error instanceof ApiError && error.status === 422)) status(`Could not stop (${error.message})`);
  }
}
$("stop").addEventListener("click", stopRun);

function upsertIfCurrent(scope, conversation, moveToTop) {
  if (scope === state.scope) upsertConversation(conversation, moveToTop);
}

async function refreshMessages(scope, id) {
  const page = await api("GET", `${chatPathOf(scope, id)}/messages?limit=${PAGE}`);
  if (state.active !== id || state.scope !== scope) return;
  const generation = ++state.openGeneration; // drops older pages still being shown
  state.olderCursor = page.hasMore && page.items.length ? page.items[0].seq : null;
  showPage(page.items, generation);
}

// The title is written in the background after the first reply: poll briefly.
async function watchTitle(scope, id) {
  for (const wait of [300, 700, 1500, 3000, 6000]) {
    await new Promise((resolve) => setTimeout(resolve, wait));
    if (scope !== state.scope) return;
    try {
      const conversation = await api("GET", chatPathOf(scope, id));
      upsertIfCurrent(scope, conversation, false);
      if (conversation.titleSource === "generated" || conversation.titleSource === "user") return;
    } catch (_) { return; }
  }
}

// Server-Sent Events over a fetch body (EventSource can neither POST nor set headers).
async function* sseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event = "message", id = null;
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let val = colon < 0 ? "" : line.slice(colon + 1);
          if (val.startsWith(" ")) val = val.slice(1);
          if (field === "event") event = val;
          else if (field === "data") data.push(val);
          else if (field === "id") id = val;
        }
        if (data.length || event !== "message") yield { event, data: data.join("\n"), id };
      }
    }
  } finally {
    reader.releaseLock();
  }
}

// ---------------------------------------------------------------- message actions
const messageById = (id) => state.messages.find((m) => m.id === id);

$("messages").addEventListener("click", async (e) => {
  const button = e.target.closest("button[data-action]");
  if (!button) return;
  const action = button.dataset.action;
  if (action === "copy-code") {
    const code = button.closest(".code-block").querySelector("code");
    return copyText(code.textContent, button);
  }
  if (action === "continue") return startRun(state.scope, state.active, {}, {});
  const m = messageById(button.closest(".message").dataset.id);
  if (!m) return;
  const scope = state.scope, id = state.active;
  try {
    if (action === "copy") await copyText(m.content, button);
    else if (action === "version-prev" || action === "version-next") await switchVersion(m, action === "version-prev" ? -1 : 1);
    else if (action === "edit") editQuestion(m, button.closest(".message"));
    else if (action === "regenerate") {
      const at = state.messages.indexOf(m);
      const question = state.messages.slice(0, at).reverse().find((x) => x.role === "user");
      if (!question) return status("No question to answer again");
      await startRun(scope, id, { parentId: question.id }, { keepUpTo: question.id });
    } else if (action === "fork") {
      const fork = await api("POST", `${chatPath(id)}/fork`, { messageId: m.id });
      upsertConversation(fork, true);
      await openConversation(fork.id);
      status("Forked into a new chat");
    } else if (action === "delete-message") {
      if (!confirm("Delete this message and everything after it on this branch?")) return;
      await api("DELETE", `${chatPath(id)}/messages/${m.id}`);
      const conversation = await api("GET", chatPath(id));
      upsertIfCurrent(scope, conversation, false);
      await refreshMessages(scope, id);
    }
  } catch (error) {
    status(`Could not ${action.replace("-", " ")} (${error.message})`);
  }
});

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
    const before = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = before; }, 1200);
  } catch (error) {
    status(`Could not copy (${error.message})`);
  }
}

async function switchVersion(m, step) {
  const at = m.siblingIds.indexOf(m.id);
  const target = m.siblingIds[at + step];
  if (!target) return;
  const scope = state.scope, id = state.active;
  const conversation = await api("PATCH", chatPath(id), { headId: target });
  upsertIfCurrent(scope, conversation, false);
  await refreshMessages(scope, id);
  const again = $("messages").querySelector(`.message[data-id="${target}"] [data-action=version-${step < 0 ? "prev" : "next"}]`)
    || $("messages").querySelector(`.message[data-id="${target}"]`);
  if (again) again.focus();
}

function editQuestion(m, node) {
  const editor = el("textarea", { class: "edit", value: m.content, "aria-label": "Edit the question" });
  const save = el("button", { type: "button", text: "Send", class: "primary" });
  const cancel = el("button", { type: "button", text: "Cancel" });
  const form = el("div", { class: "editing" }, editor, el("div", { class: "edit-actions" }, cancel, save));
  const content = node.querySelector(".content");
  const controls = node.querySelector(".controls");
  content.hidden = true; controls.hidden = true;
  node.append(form);
  editor.focus();
  const close = () => { form.remove(); content.hidden = false; controls.hidden = false; };
  cancel.addEventListener("click", close);
  const send = () => {
    const text = editor.value;
    if (!text.trim()) return;
    close();
    const question = { id: crypto.randomUUID(), role: "user", content: text, siblingCount: 1, metadata: {} };
    const parentId = m.parentId ?? null;
    startRun(state.scope, state.active, { id: question.id, content: text, parentId }, { question, keepUpTo: parentId });
  };
  save.addEventListener("click", send);
  editor.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); send(); }
    if (e.key === "Escape") { e.preventDefault(); e.stopPropagation(); close(); }
  });
}

// ---------------------------------------------------------------- composer
$("input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); $("composer").requestSubmit(); }
});

$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("input").value;
  if (!text.trim() || !state.active || $("send").disabled) return;
  $("input").value = "";
  // The id makes a retried send idempotent.
  const question = { id: crypto.randomUUID(), role: "user", content: text, siblingCount: 1, metadata: {} };
  startRun(state.scope, state.active, { id: question.id, content: text }, { question });
});

// ---------------------------------------------------------------- keyboard
const typing = (target) => target instanceof HTMLElement && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));

document.addEventListener("keydown", (e) => {
  const mod = e.ctrlKey || e.metaKey;
  const key = e.key.toLowerCase();
  if (mod && !e.shiftKey && key === "k") {
    e.preventDefault();
    if (!sidebarShown()) toggleSidebar();
    $("search").focus(); $("search").select();
  } else if (mod && e.shiftKey && key === "o") {
    e.preventDefault(); newChat();
  } else if (mod && e.shiftKey && key === "s") {
    e.preventDefault(); toggleSidebar();
  } else if (e.shiftKey && e.key === "Escape") {
    e.preventDefault(); $("input").focus();
  } else if (e.altKey && (e.key === "ArrowUp" || e.key === "ArrowDown")) {
    e.preventDefault();
    const at = state.order.indexOf(state.active);
    const next = state.order[e.key === "ArrowUp" ? Math.max(0, at - 1) : Math.min(state.order.length - 1, at + 1)];
    if (next && next !== state.active) openConversation(next);
  } else if (e.key === "Escape") {
    const run = state.active && state.runs.get(state.active);
    if (run && run.runId && !run.error && !$("shortcuts").open) { e.preventDefault(); stopRun(); }
    else if (document.body.classList.contains("drawer-open")) { closeDrawer(); $("toggle-sidebar").focus(); }
  } else if ((e.key === "?" && !typing(e.target)) || (mod && e.key === "/")) {
    e.preventDefault(); showShortcuts();
  }
});

function showShortcuts() { if (!$("shortcuts").open) $("shortcuts").showModal(); }
$("show-shortcuts").addEventListener("click", showShortcuts);
$("close-shortcuts").addEventListener("click", () => $("shortcuts").close());

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

async function loadServerScopes() {
  try {
    const response = await fetch(SCOPES);
    if (!response.ok) return;
    const body = await response.json();
    if (Array.isArray(body.items)) state.serverScopes = body.items.filter((s) => typeof s === "string" && validScope(s));
  } catch (_) {
    // No list from the server: the ones this browser knows.
  }
}

// A link followed while the page is open (pasted, or from another page).
window.addEventListener("hashchange", () => {
  const link = parseLink(location.hash);
  if (!link) { if (location.hash.length > 1) status("Ignored a link that does not name a conversation"); return; }
  if (link.scope !== state.scope) {
    rememberScope(link.scope);
    renderScopes(link.scope);
    switchScope(link.scope);
  }
  if (link.id && link.id !== state.active) openConversation(link.id);
});

(async function start() {
  syncSidebar();
  const hash = location.hash;
  const link = hash.length > 1 ? parseLink(hash) : null;
  await loadServerScopes();
  const saved = localStorage.getItem("scope");
  let scope = (link && link.scope) || (saved && validScope(saved) ? saved : null) || knownScopes()[0];
  rememberScope(scope);
  renderScopes(scope);
  switchScope(scope);
  if (link && link.id) openConversation(link.id);
  else if (hash.length > 1 && !link) status("Ignored a link that does not name a conversation");
})();
