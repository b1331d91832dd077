// Browser test of the playground (make playground-test): serves the built page from this
// process, drives Debian's chromium through playwright-core, edits the policy with the
// keyboard and checks what the page shows. The differential part checks that the page's
// tables and decisions equal the certgate CLI's for every example policy.
//
// Environment: PLAYGROUND_SITE (the built page, default target/playground/site),
// CERTGATE_BIN (default target/debug/certgate), CHROMIUM (default /usr/bin/chromium),
// PLAYGROUND_ARTIFACTS (screenshots, default target/playground).

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync, existsSync, mkdirSync } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const site = path.resolve(process.env.PLAYGROUND_SITE ?? path.join(repo, "target/playground/site"));
const artifacts = path.resolve(process.env.PLAYGROUND_ARTIFACTS ?? path.join(repo, "target/playground"));
const certgate = path.resolve(process.env.CERTGATE_BIN ?? path.join(repo, "target/debug/certgate"));
const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".wasm": "application/wasm",
};

let server;
let origin;
let browser;
let page;
let tmp;
const pageErrors = [];
const foreignRequests = [];

function serve(req, res) {
  const url = new URL(req.url, "http://localhost");
  const rel = decodeURIComponent(url.pathname).replace(/\/$/, "/index.html");
  const file = path.join(site, path.normalize(rel));
  if (!file.startsWith(site + path.sep) || !existsSync(file)) {
    res.writeHead(404).end("not found");
    return;
  }
  res.writeHead(200, { "content-type": TYPES[path.extname(file)] ?? "application/octet-stream" });
  res.end(readFileSync(file));
}

// The engine's description of a reason, read from its one definition (ruleset's
// Reason::description), as the page shows it (backticks become code spans): the page must
// explain a decision in the engine's words, not with a copy of its own.
function engineDescription(variant) {
  const src = readFileSync(path.join(repo, "ruleset/src/decision.rs"), "utf8");
  const body = src.slice(src.indexOf("pub fn description("));
  const m = body.match(new RegExp(`Reason::${variant} => "([^"]*)"`));
  assert.ok(m, `ruleset has no description for Reason::${variant}`);
  return m[1].replaceAll("`", "");
}

before(async () => {
  assert.ok(existsSync(path.join(site, "index.html")), `no built page in ${site}: run make playground`);
  assert.ok(existsSync(certgate), `no certgate binary at ${certgate}: run make cli`);
  mkdirSync(artifacts, { recursive: true });
  tmp = mkdtempSync(path.join(os.tmpdir(), "certgate-playground-"));
  server = http.createServer(serve);
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  origin = `http://127.0.0.1:${server.address().port}`;
  browser = await chromium.launch({
    executablePath,
    headless: true,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    ],
  });
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, acceptDownloads: true });
  // Everything the page needs is served locally: any other request is a bug.
  await context.route("**/*", (route) => {
    const url = route.request().url();
    if (url.startsWith(origin) || url.startsWith("blob:") || url.startsWith("data:")) return route.continue();
    foreignRequests.push(url);
    return route.abort();
  });
  page = await context.newPage();
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") pageErrors.push(m.text()); });
  await page.goto(`${origin}/`);
  await page.waitForSelector("body[data-ready=true]", { timeout: 30_000 });
  // Once loaded, the page works without a network.
  await context.setOffline(true);
});

after(async () => {
  await browser?.close();
  await new Promise((resolve) => (server ? server.close(resolve) : resolve()));
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

function cli(...args) {
  return execFileSync(certgate, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

async function decision() {
  return page.$eval("#decision", (el) => ({ ...el.dataset }));
}

// Replaces the first occurrence of `find` after `after` in the editor by typing over it.
async function typeOver(find, replacement, after = "") {
  const text = await page.inputValue("#policy");
  const from = text.indexOf(after);
  assert.ok(from >= 0, `\`${after}\` not in the policy`);
  const at = text.indexOf(find, from);
  assert.ok(at >= 0, `\`${find}\` not in the policy after \`${after}\``);
  await page.focus("#policy");
  await page.$eval("#policy", (el, [s, e]) => el.setSelectionRange(s, e), [at, at + find.length]);
  await page.keyboard.type(replacement);
  return text.slice(0, at).split("\n").length; // 1-based line of the edit
}

async function loadExample(name) {
  await page.selectOption("#example", name);
  await page.waitForFunction((n) => document.getElementById("file-name").textContent === n, name);
}

test("the page compiles the default example and decides for its preset peer", async () => {
  assert.match(await page.textContent("#version"), /^certgate \d+\.\d+\.\d+/);
  assert.equal(await page.textContent("#file-name"), "zero-trust.yaml");
  assert.equal(await page.getAttribute("#counts", "data-errors"), "0");
  const d = await decision();
  assert.equal(d.action, "allow");
  assert.equal(d.reason, "allow_rule");
  assert.equal(d.rule, "frontend-to-payments");
  assert.equal(d.policy, "payments-inbound");
  assert.match(await page.textContent("#verdict"), /ALLOW/);
  assert.match(await page.textContent("#table-text"), /deny no-legacy \(policy payments-inbound\)/);
});

test("editing the policy shows each error on its line, with help, and no decision", async () => {
  await loadExample("zero-trust.yaml");
  const line1 = await typeOver("principals", "principal", "name: ops-admin");
  const line2 = await typeOver("9000-9001", "9000-90001", "name: ops-admin");
  await page.waitForSelector('#counts[data-errors="2"]');

  const items = await page.$$eval("#diagnostics .diag", (bs) => bs.map((b) => ({
    code: b.dataset.code, line: Number(b.dataset.line),
    msg: b.querySelector(".msg").textContent, help: b.querySelector(".help")?.textContent ?? "",
  })));
  assert.deepEqual(items.map((i) => [i.code, i.line]), [
    ["certgate::unknown-field", line1],
    ["certgate::invalid-port", line2],
  ]);
  // User input in backticks shows as code.
  assert.equal(items[0].msg, "unknown field principal in rule ops-admin");
  assert.equal(await page.innerHTML("#diagnostics .diag >> nth=0 >> .help"),
    "<b>help:</b> did you mean <code>principals</code>?");
  assert.ok(items[1].help.length > 0, "every error has help text");

  // The offending lines are highlighted in the editor and marked in the gutter.
  const marked = await page.$$eval(".backdrop .line.hl-error", (ls) => ls.map((l) => Number(l.dataset.line)));
  assert.deepEqual(marked, [line1, line2]);
  assert.equal(await page.textContent(`.backdrop .line[data-line="${line1}"] .m-error`), "principal");
  const gutter = await page.$$eval(".gl.g-error", (ls) => ls.map((l) => Number(l.textContent)));
  assert.deepEqual(gutter, [line1, line2]);

  // No table, so no decision; the download is off.
  const d = await decision();
  assert.equal(d.action, "");
  assert.match(await page.textContent("#explain"), /Fix the errors/);
  assert.equal(await page.isDisabled("#download"), true);

  // Enter on a finding selects its span in the editor.
  await page.focus("#diagnostics .diag >> nth=0");
  await page.keyboard.press("Enter");
  const selected = await page.$eval("#policy", (el) => [
    document.activeElement === el, el.value.slice(el.selectionStart, el.selectionEnd)]);
  assert.deepEqual(selected, [true, "principal"]);
  await page.screenshot({ path: path.join(artifacts, "screenshot-errors.png") });

  // Fixing both brings the decision back.
  await typeOver("principal", "principals", "name: ops-admin");
  await typeOver("9000-90001", "9000-9001", "name: ops-admin");
  await page.waitForSelector('#counts[data-errors="0"]');
  await page.keyboard.press("Control+Enter");
  assert.equal((await decision()).action, "allow");
  assert.equal(await page.$$eval(".backdrop .line.hl-error", (ls) => ls.length), 0);
});

test("a warning highlights its line and the table still decides", async () => {
  await loadExample("zero-trust.yaml");
  const line = await typeOver("24h", "2400h", "maxLifetime");
  await page.waitForSelector('#counts[data-warnings="1"]');
  assert.equal(await page.getAttribute("#counts", "data-errors"), "0");
  const code = await page.getAttribute("#diagnostics .diag.warning", "data-code");
  assert.equal(code, "certgate::long-lifetime");
  assert.deepEqual(await page.$$eval(".backdrop .line.hl-warning", (ls) => ls.map((l) => Number(l.dataset.line))), [line]);
  // A peer the deny rule catches, to show a deny beside the warning.
  await page.fill("#identity", "spiffe://cluster.local/ns/legacy/sa/batch");
  await page.keyboard.press("Control+Enter");
  const d = await decision();
  assert.deepEqual([d.action, d.reason, d.rule], ["deny", "deny_rule", "no-legacy"]);
  assert.equal(await page.textContent("#explain"), engineDescription("DenyRule"));
  await page.screenshot({ path: path.join(artifacts, "screenshot.png") });
});

test("keyboard: Tab leaves the editor, Ctrl+Enter evaluates from any field", async () => {
  await loadExample("zero-trust.yaml");
  await page.focus("#policy");
  await page.keyboard.press("Tab");
  assert.notEqual(await page.evaluate(() => document.activeElement.id), "policy");
  await page.focus("#port");
  await page.keyboard.press("Control+A");
  await page.keyboard.type("9443");
  await page.keyboard.press("Control+Enter");
  assert.equal((await decision()).reason, "default_deny");
  assert.equal(await page.textContent("#explain"), engineDescription("DefaultDeny"));
});

// What-if peers: identities from every example plus strangers, over several connections.
const IDENTITIES = [
  "spiffe://cluster.local/ns/frontend/sa/web",
  "spiffe://cluster.local/ns/checkout/sa/cart",
  "spiffe://cluster.local/ns/legacy/sa/batch",
  "spiffe://cluster.local/ns/ops/sa/payments-admin",
  "spiffe://cluster.local/ns/web/sa/web",
  "spiffe://prod.example.com/ns/batch/sa/nightly",
  "spiffe://prod.example.com/ns/batch/sa/ad-hoc",
  "spiffe://staging.example.com/ns/debug/sa/shell",
  "spiffe://prod.example.com/ns/reporting/sa/exporter",
  "spiffe://elsewhere.test/ns/x/sa/y",
  "spiffe://cluster.local/ns/a%2Fb/sa/web",
  "https://cluster.local/ns/frontend/sa/web",
];
const CONNECTIONS = [
  { tls: "1.3", port: "8443", sni: "payments.internal.example.com", ip: "" },
  { tls: "1.2", port: "8080", sni: "", ip: "" },
  { tls: "", port: "9000", sni: "", ip: "10.20.1.5" },
  { tls: "1.3", port: "8000", sni: "", ip: "192.0.2.7" },
];
const CERTS = readdirSync(path.join(repo, "compiler/tests/fixtures")).filter((f) => f.endsWith(".pem")).sort();

async function setPeer(peer, conn) {
  const kind = peer.cert ? "cert" : "identity";
  await page.check(`input[name="peer-kind"][value="${kind}"]`);
  if (peer.cert) await page.selectOption("#cert-sample", peer.cert);
  else await page.fill("#identity", peer.identity);
  await page.selectOption("#tls", conn.tls);
  await page.fill("#port", conn.port);
  await page.fill("#sni", conn.sni);
  await page.fill("#source-ip", conn.ip);
  await page.keyboard.press("Control+Enter");
}

function cliEval(table, peer, conn) {
  const args = ["eval", "--table", table];
  if (peer.cert) args.push("--cert", path.join(repo, "compiler/tests/fixtures", peer.cert));
  else args.push("--identity", peer.identity);
  if (conn.tls) args.push("--tls-version", conn.tls);
  if (conn.port) args.push("--port", conn.port);
  if (conn.sni) args.push("--sni", conn.sni);
  if (conn.ip) args.push("--source-ip", conn.ip);
  return JSON.parse(cli(...args));
}

test("the page's tables and decisions equal certgate compile and eval for every example", async (t) => {
  const policies = readdirSync(path.join(repo, "policies"))
    .filter((f) => f.endsWith(".yaml") && !f.endsWith(".test.yaml")).sort();
  assert.ok(policies.length >= 3);
  const peers = [...IDENTITIES.map((identity) => ({ identity })), ...CERTS.map((cert) => ({ cert }))];
  let compared = 0;
  const verdicts = new Set();
  for (const name of policies) {
    await loadExample(name);
    assert.equal(await page.getAttribute("#counts", "data-errors"), "0", `${name} compiles in the page`);
    const table = path.join(tmp, name.replace(/\.yaml$/, ".cgt"));

    // The table the page builds is byte for byte the one the CLI writes, given the same
    // issue time (the header's u64 at offset 48, Unix milliseconds).
    const [download] = await Promise.all([page.waitForEvent("download"), page.click("#download")]);
    const fromPage = readFileSync(await download.path());
    const issued = fromPage.readBigUInt64LE(48);
    assert.ok(issued > 0n, `${name}: the page's table has no issue time`);
    cli("compile", path.join(repo, "policies", name), "-o", table, "--issued-at-ms", issued.toString());
    assert.ok(fromPage.equals(readFileSync(table)), `${name}: the page's table differs from certgate compile's`);

    for (const peer of peers) {
      for (const conn of CONNECTIONS) {
        await setPeer(peer, conn);
        const got = await decision();
        const want = cliEval(table, peer, conn);
        const shown = Object.fromEntries(Object.keys(want).map((k) => [k, got[k] === "" ? null : got[k]]));
        assert.deepEqual(shown, want, `${name} ${JSON.stringify(peer)} ${JSON.stringify(conn)}`);
        verdicts.add(`${want.action}:${want.reason}`);
        compared++;
      }
    }
  }
  // The cases reach both actions and many reasons, or the comparison proves little.
  assert.ok(verdicts.size >= 8, `only ${[...verdicts].join(", ")}`);
  t.diagnostic(`compared ${compared} decisions (${verdicts.size} distinct action:reason pairs) with certgate eval`);
});

test("certificate facts equal certgate cert", async () => {
  await loadExample("revoked-intermediate.yaml");
  for (const cert of CERTS) {
    await page.check('input[name="peer-kind"][value="cert"]');
    await page.selectOption("#cert-sample", cert);
    const shown = await page.$eval("#cert-card", (el) => ({ ...el.dataset }));
    const want = JSON.parse(cli("cert", "--format", "json", path.join(repo, "compiler/tests/fixtures", cert))).certificates[0];
    assert.deepEqual([shown.sha256, shown.spiffeId, shown.serial], [want.sha256, want.spiffeId, want.serial], cert);
  }
  // A DER file opened from disk reads the same as its PEM.
  const pem = readFileSync(path.join(repo, "compiler/tests/fixtures", CERTS[0]), "utf8");
  const der = Buffer.from(pem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, ""), "base64");
  await page.setInputFiles("#cert-file", { name: "peer.der", mimeType: "application/octet-stream", buffer: der });
  await page.waitForFunction(() => document.getElementById("cert-sample").value === "");
  const want = JSON.parse(cli("cert", "--format", "json", path.join(repo, "compiler/tests/fixtures", CERTS[0]))).certificates[0];
  assert.equal(await page.getAttribute("#cert-card", "data-sha256"), want.sha256);
});

test("a copied link brings back the edited policy and the peer", async () => {
  await loadExample("staged-rollout.yaml");
  await typeOver("ad-hoc", "ad-hoc-2", "notPrincipals");
  await page.fill("#identity", "spiffe://prod.example.com/ns/batch/sa/ad-hoc");
  await page.keyboard.press("Control+Enter");
  const before = await decision();
  assert.deepEqual([before.action, before.rule, before.admitted], ["allow", "batch-jobs-readonly", "true"]);
  const policy = await page.inputValue("#policy");
  await page.click("#share");
  const url = page.url();
  assert.match(url, /#s=[\w-]+$/);
  await page.context().setOffline(false);
  await page.goto("about:blank");
  await page.goto(url);
  await page.waitForSelector("body[data-ready=true]");
  await page.context().setOffline(true);
  assert.equal(await page.inputValue("#policy"), policy);
  assert.equal(await page.textContent("#file-name"), "staged-rollout.yaml");
  assert.deepEqual(await decision(), before);
});

test("the page made no request outside its own origin and logged no error", () => {
  assert.deepEqual(foreignRequests, []);
  assert.deepEqual(pageErrors, []);
});
