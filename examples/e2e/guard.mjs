// The example server's defences, seen from a real browser (headless Chromium):
//
//   node guard.mjs <base-url>
//
// - DNS rebinding: a name of the attacker's that resolves to 127.0.0.1
//   (--host-resolver-rules) gets 403 for the page and for the API, and a script of
//   that origin can neither read nor write a scope;
// - a page of another site cannot write through the API (cross-site fetch and form);
// - the page survives a malformed link and ignores a crafted one.
// Started by examples/tests/server.rs; exits non-zero with the reason on any failure.
import { check, launch } from "./browser.mjs";

const [base] = process.argv.slice(2);
if (!base) {
  console.error("usage: node guard.mjs <base-url>");
  process.exit(2);
}
const port = new URL(base).port;
const rebound = `http://rebind.attacker.test:${port}`;
const attacker = `http://attacker.test:${port}`;
const api = `${base}/api/v1/connections/analytics-db/conversations`;

const count = async () => (await (await fetch(api)).json()).items.length;

const browser = await launch([
  `--host-resolver-rules=MAP rebind.attacker.test 127.0.0.1, MAP attacker.test 127.0.0.1`,
  // Chromium's own Local Network Access checks would stop some of these requests
  // before they reach the server; other browsers have none. The server must refuse
  // them by itself, so the test turns the browser's checks off.
  "--disable-features=LocalNetworkAccessChecks,PrivateNetworkAccessSendPreflights,PrivateNetworkAccessRespectPreflightResults",
]);
try {
  const seeded = await fetch(api, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ title: "Secret plans" }),
  });
  check(seeded.status === 201, `seeding: ${seeded.status}`);
  const before = await count();

  // 1. The page under a rebound name is refused, with a problem document.
  const page = await browser.newPage();
  const refused = await page.goto(`${rebound}/`);
  check(refused.status() === 403, `the page under a rebound name: ${refused.status()}`);
  check(refused.headers()["content-type"] === "application/problem+json", "403 is a problem document");
  check((await refused.json()).code === "host_not_allowed", "403 host_not_allowed");

  // 2. A script the attacker served (before rebinding) reads and writes the API under
  //    its own name, that now resolves to 127.0.0.1: refused.
  await page.route(`${rebound}/attack`, (route) =>
    route.fulfill({ status: 200, contentType: "text/html", body: "<!doctype html><title>attack</title>" }),
  );
  await page.goto(`${rebound}/attack`);
  const rebinding = await page.evaluate(async () => {
    const path = "/api/v1/connections/analytics-db/conversations";
    const read = await fetch(path);
    const write = await fetch(path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ title: "planted" }),
    });
    return { read: read.status, readBody: await read.text(), write: write.status };
  });
  check(rebinding.read === 403 && rebinding.write === 403, `rebinding: ${JSON.stringify(rebinding)}`);
  check(!rebinding.readBody.includes("Secret plans"), "the rebound page read a conversation");

  // 3. A page of another site writes to the real name: refused, nothing stored.
  await page.route(`${attacker}/evil`, (route) =>
    route.fulfill({ status: 200, contentType: "text/html", body: "<!doctype html><title>evil</title>" }),
  );
  await page.goto(`${attacker}/evil`);
  await page.evaluate(async (target) => {
    for (const body of ['{"title":"planted"}']) {
      try {
        await fetch(target, { method: "POST", mode: "no-cors", headers: { "content-type": "text/plain" }, body });
      } catch (_) {}
    }
    const form = document.createElement("form");
    form.method = "POST";
    form.action = target;
    document.body.append(form);
    form.submit();
  }, api);
  await page.waitForLoadState("load");
  check((await count()) === before, "a cross-site page stored a conversation");

  // 4. The page itself, under a loopback name: a malformed link does not kill it, a
  //    crafted one is ignored.
  const app = await browser.newPage();
  const errors = [];
  app.on("pageerror", (error) => errors.push(error.message));
  for (const hash of ["#%E0%A4%A", "#analytics-db/..%2F..%2Fbilling-db", "#analytics-db/not-a-uuid/x", "#%00/0190a1b2-0000-7000-8000-000000000000"]) {
    await app.goto("about:blank");
    await app.goto(`${base}/${hash}`);
    await app.waitForFunction(() => document.querySelector("#status").textContent.includes("Ignored a link"));
    await app.waitForFunction(() => document.querySelector("#list").children.length > 0);
    check(await app.evaluate(() => location.hash) === "", `the link ${hash} stayed`);
    check(await app.locator("#messages .message").count() === 0, `the link ${hash} opened something`);
  }
  // A well-formed link to a conversation of another scope shows nothing of it.
  const other = await (await fetch(`${base}/api/v1/connections/billing-db/conversations`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ title: "Billing secret" }),
  })).json();
  await app.goto("about:blank");
  await app.goto(`${base}/#analytics-db/${other.id}`);
  await app.waitForFunction(() => document.querySelector("#status").textContent.includes("Could not open"));
  check(!(await app.content()).includes("Billing secret"), "another scope's conversation was shown");
  check(errors.length === 0, `the page died: ${errors.join("; ")}`);
  console.log("ok: rebinding, cross-site writes and bad links refused");
} finally {
  await browser.close();
}
