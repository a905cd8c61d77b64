// End-to-end test of the example server's page in headless Chromium.
//
//   node sidebar.mjs <base-url> <screenshot-folder>
//
// Started by examples/tests/server.rs against the real server binary (temporary
// SQLite file, offline echo model). Exits non-zero with the reason on any failure.
// Writes the screenshots (desktop-light.png, desktop-dark.png, phone-light.png,
// phone-dark.png) into the folder and prints the 500-message timing.
import { check, launch } from "./browser.mjs";
import { pageFeatures } from "./features.mjs";

const [base, shots] = process.argv.slice(2);
if (!base || !shots) {
  console.error("usage: node sidebar.mjs <base-url> <screenshot-folder>");
  process.exit(2);
}

const browser = await launch();
const problems = [];
try {
  const context = await browser.newContext({ viewport: { width: 1200, height: 800 } });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: base });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  // Long tasks and CSP violations, recorded from the first script on.
  await page.addInitScript(() => {
    window.__longTasks = [];
    window.__cspViolations = [];
    new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) window.__longTasks.push({ start: entry.startTime, duration: entry.duration });
    }).observe({ type: "longtask", buffered: true });
    document.addEventListener("securitypolicyviolation", (e) => window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console error: ${message.text()}`);
  });
  page.on("dialog", (dialog) => dialog.accept());
  page.on("response", (response) => {
    if (response.status() >= 400) problems.push(`HTTP ${response.status()} for ${response.request().method()} ${response.url()}`);
  });
  // A stream cut by a reload is the browser's doing, not a failure.
  let reloading = false;
  page.on("requestfailed", (request) => {
    const stream = /\/(reply|events)$/.test(new URL(request.url()).pathname);
    if (!(reloading && stream && request.failure().errorText === "net::ERR_ABORTED")) {
      problems.push(`request failed: ${request.method()} ${request.url()} ${request.failure().errorText}`);
    }
  });

  const items = page.locator("#list li[data-testid=conversation]");
  const sidebarTitles = async () => (await items.locator(".title").allTextContents()).map((t) => t.trim());
  const messageTexts = async () => (await page.locator("#messages .message > .content").allTextContents()).map((t) => t.trim());
  const item = (title) => items.filter({ has: page.locator(".title", { hasText: title }) }).first();

  const waitForReply = async (text) => {
    await page
      .locator(".message.assistant:not(.streaming)")
      .filter({ hasText: `You said: ${text}` })
      .first()
      .waitFor();
  };
  const ask = async (text) => {
    await page.fill("#input", text);
    await page.press("#input", "Enter");
  };
  const newChat = async (text) => {
    const before = await items.count();
    await page.click("#new-chat");
    await page.waitForFunction((n) => document.querySelectorAll("#list li[data-testid=conversation]").length > n, before);
    await ask(text);
    await waitForReply(text);
  };
  const waitForTitles = async (expected) => {
    await page.waitForFunction(
      (wanted) => {
        const got = [...document.querySelectorAll("#list li[data-testid=conversation] .title")].map((e) => e.textContent.trim());
        return JSON.stringify(got) === JSON.stringify(wanted);
      },
      expected,
    ).catch(async () => {
      const stored = await (await fetch(`${base}/api/v1/connections/${await page.inputValue("#scope")}/conversations?pinned=true`)).json();
      const server = stored.items.map((c) => `${c.title} @ ${c.updatedAt}`);
      throw new Error(`sidebar shows ${JSON.stringify(await sidebarTitles())}, expected ${JSON.stringify(expected)}; the server lists ${JSON.stringify(server)}`);
    });
  };
  const selectScope = async (scope) => {
    await page.selectOption("#scope", scope);
    await page.waitForFunction(() => document.querySelector("#list").children.length > 0);
  };

  // Infinite scroll: a scope of 40 conversations, one of them 70 messages long, made
  // through the API; the page shows 30 at a time and loads more on scroll.
  const api = `${base}/api/v1/connections/bulk-db/conversations`;
  const post = async (url, body) => {
    const response = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    check(response.ok, `seeding: ${response.status} for ${url}`);
    return response.json();
  };
  let long = null;
  for (let i = 1; i <= 40; i++) long = await post(api, { title: `Bulk ${String(i).padStart(2, "0")}` });
  await post(`${api}/${long.id}/messages`, Array.from({ length: 70 }, (_, i) => ({ role: i % 2 ? "assistant" : "user", content: `line ${i + 1}` })));
  await page.goto(`${base}/#bulk-db`);
  await page.waitForFunction(() => document.querySelectorAll("#list li[data-testid=conversation]").length === 30);
  await page.locator("#list").evaluate((list) => { list.scrollTop = list.scrollHeight; });
  await page.waitForFunction(() => document.querySelectorAll("#list li[data-testid=conversation]").length === 40);
  const bulk = await sidebarTitles();
  check(new Set(bulk).size === 40 && bulk[0] === "Bulk 40" && bulk[39] === "Bulk 01", `bulk sidebar: ${JSON.stringify(bulk)}`);
  await item("Bulk 40").click();
  await page.locator(".message .content", { hasText: "line 70" }).waitFor();
  // The newest 30 first (the newest at once, the rest of the page just after).
  await page.waitForFunction(() => document.querySelectorAll("#messages .message").length === 30);
  await page.waitForTimeout(300);
  check((await messageTexts()).length === 30, "the newest 30 messages first");
  for (const expected of [60, 70]) {
    await page.locator("#messages").evaluate((box) => { box.scrollTop = 0; });
    await page.waitForFunction((n) => document.querySelectorAll("#messages .message").length === n, expected);
  }
  const all = await messageTexts();
  check(all[0] === "line 1" && all[69] === "line 70", `older pages load in order: ${all[0]} … ${all[69]}`);

  await selectScope("analytics-db");

  // Two conversations in the first scope, replies streamed, titles at once.
  await newChat("Which tables are largest?");
  const hostile = `<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">hello`;
  await newChat(hostile);
  await waitForTitles(["window.__xss = 1 hello", "Which tables are largest?"]);

  // Text is text: the markup shows as typed and never runs.
  const texts = await messageTexts();
  check(texts.includes(hostile), `the hostile message is not shown as typed: ${JSON.stringify(texts)}`);
  check(await page.locator("#messages img, #messages script").count() === 0, "markup became elements");
  check(await page.evaluate(() => window.__xss === undefined), "a message ran as script");

  // A second scope sees none of the first.
  await selectScope("billing-db");
  await newChat("Invoice totals by month?");
  await waitForTitles(["Invoice totals by month?"]);

  await selectScope("analytics-db");
  await waitForTitles(["window.__xss = 1 hello", "Which tables are largest?"]);

  // Switching is instant and never mixes two conversations, even mid-stream.
  await item("Which tables are largest?").click();
  await page.locator(".message.user .content", { hasText: "Which tables are largest?" }).waitFor();
  await ask("And their indexes?");
  await page.locator(".message.assistant.streaming").waitFor();
  await item("window.__xss = 1 hello").click();
  await page.locator(".message.user .content", { hasText: "window.__xss = 1" }).waitFor();
  const started = Date.now();
  while (Date.now() - started < 1500) {
    const shown = await messageTexts();
    check(!shown.some((t) => t.includes("indexes")), `a streaming reply leaked into another conversation: ${JSON.stringify(shown)}`);
    check(shown.includes(hostile), `the open conversation lost its messages: ${JSON.stringify(shown)}`);
    await page.waitForTimeout(100);
  }
  await item("Which tables are largest?").click();
  await waitForReply("And their indexes?");
  const largest = await messageTexts();
  check(largest.filter((t) => t.includes("You said:")).length === 2, `expected two replies: ${JSON.stringify(largest)}`);

  // Rename inline, pin (moves to the top), delete with confirmation.
  await item("Which tables are largest?").hover();
  await item("Which tables are largest?").locator("button[aria-label=Rename]").click();
  await page.fill("#list li input", "Table sizes");
  await page.press("#list li input", "Enter");
  await waitForTitles(["Table sizes", "window.__xss = 1 hello"]);

  await item("window.__xss = 1 hello").hover();
  await item("window.__xss = 1 hello").locator("button[aria-label=Pin]").click();
  await waitForTitles(["window.__xss = 1 hello", "Table sizes"]);
  check(await item("window.__xss = 1 hello").locator(".pin-mark").count() === 1, "the pinned conversation has no pin mark");

  await newChat("Temporary question");
  await waitForTitles(["window.__xss = 1 hello", "Temporary question", "Table sizes"]);
  await item("Temporary question").hover();
  await item("Temporary question").locator("button[aria-label=Delete]").click();
  await waitForTitles(["window.__xss = 1 hello", "Table sizes"]);

  // Reload: everything is as it was, from the server.
  await page.reload();
  await waitForTitles(["window.__xss = 1 hello", "Table sizes"]);
  check(await page.inputValue("#scope") === "analytics-db", "the scope was not remembered");
  await item("Table sizes").click();
  await page.locator(".message.assistant", { hasText: "You said: And their indexes?" }).waitFor();
  const reloaded = await messageTexts();
  check(reloaded.length === 4, `expected 4 stored messages after reload, got ${JSON.stringify(reloaded)}`);
  await selectScope("billing-db");
  await waitForTitles(["Invoice totals by month?"]);
  await selectScope("analytics-db");
  await waitForTitles(["window.__xss = 1 hello", "Table sizes"]);
  await item("window.__xss = 1 hello").click();
  await page.locator(".message.user .content", { hasText: "hello" }).waitFor();

  await pageFeatures({ page, context, base, shots, item, items, ask, newChat, waitForReply, selectScope, post, setReloading: (on) => { reloading = on; } });

  const csp = await page.evaluate(() => window.__cspViolations);
  check(csp.length === 0, `CSP violations: ${csp.join("; ")}`);
  check(problems.length === 0, `the page reported errors:\n${problems.join("\n")}`);
  console.log(`ok: screenshots in ${shots}`);
} finally {
  await browser.close();
}
