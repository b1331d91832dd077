// The certgate playground: an editor over the compiler and the decision engine, both
// compiled to WebAssembly from the Rust crates (playground/src/lib.rs). This file only moves
// text between the page and those functions and draws their answers; it holds no rule of
// the policy language (the diagnostics, tables and decisions all come from the wasm module).

import init, * as certgate from "./pkg/certgate_playground.js";

const $ = (id) => document.getElementById(id);

// What-if peers that show something about each example (page content, not policy logic).
const PRESETS = {
  "zero-trust.yaml": {
    kind: "identity", identity: "spiffe://cluster.local/ns/frontend/sa/web",
    tls: "1.3", port: "8443", sni: "payments.internal.example.com", sourceIp: "",
  },
  "staged-rollout.yaml": {
    kind: "identity", identity: "spiffe://prod.example.com/ns/batch/sa/ad-hoc",
    tls: "1.2", port: "8080", sni: "", sourceIp: "",
  },
  "revoked-intermediate.yaml": {
    kind: "cert", cert: "legacy-batch.pem", tls: "1.2", port: "8000", sni: "", sourceIp: "",
  },
};

// One sentence per stable reason code, for people reading the decision: the engine's own
// (Reason::description in ruleset), read from the wasm module once it is loaded.
let REASONS = {};

const state = {
  examples: null,
  fileName: "policy.yaml",
  tableBytes: null,
  lastDiagnostics: [],
  timer: 0,
};

// ---------------------------------------------------------------------------------------
// Small helpers

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
  })[c]);
}

// Messages put user input in backticks: show those parts as code.
function richText(s) {
  return escapeHtml(s).replace(/`([^`]*)`/g, "<code>$1</code>");
}

function hexToBytes(hex) {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(i * 2, 2), 16);
  return out;
}

function call(fn, ...args) {
  try {
    return JSON.parse(fn(...args));
  } catch (e) {
    return { error: `internal error: ${e && e.message ? e.message : e}` };
  }
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

function setStatus(text, kind = "") {
  const s = $("status");
  s.textContent = text;
  s.className = `status ${kind}`;
}

function debounce(fn, ms) {
  clearTimeout(state.timer);
  state.timer = setTimeout(fn, ms);
}

// ---------------------------------------------------------------------------------------
// Editor: a textarea over a highlighted copy of its text (syntax colours, diagnostic marks)

const editor = $("policy");
const backdrop = $("backdrop");
const gutter = $("gutter");

// Token classes for one line of YAML: just enough colour to read a policy.
function tokenize(line) {
  const cls = new Array(line.length).fill("");
  const paint = (from, to, c) => { for (let i = from; i < to && i < cls.length; i++) cls[i] = c; };
  if (/^(---|\.\.\.)\s*$/.test(line)) { paint(0, line.length, "t-doc"); return cls; }
  let quote = "";
  let qStart = 0;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i];
    if (quote) {
      if (ch === quote) { paint(qStart, i + 1, "t-str"); quote = ""; }
      continue;
    }
    if (ch === '"' || ch === "'") { quote = ch; qStart = i; continue; }
    if (ch === "#" && (i === 0 || /\s/.test(line[i - 1]))) { paint(i, line.length, "t-comment"); break; }
    if ("{}[],".includes(ch)) cls[i] = "t-punct";
  }
  if (quote) paint(qStart, line.length, "t-str");
  // Keys: at the start of the line (after `- `) or after `{` / `,` in a flow mapping.
  const keyRe = /(^\s*(?:-\s+)*|[{,]\s*)([A-Za-z_][\w.-]*)(:)(?=\s|$)/g;
  let m;
  while ((m = keyRe.exec(line))) {
    const start = m.index + m[1].length;
    if (cls[start] === "t-comment" || cls[start] === "t-str") continue;
    paint(start, start + m[2].length, "t-key");
  }
  const dash = /^(\s*)(-)(?=\s|$)/.exec(line);
  if (dash) cls[dash[1].length] = "t-punct";
  return cls;
}

// Per line: the severity of the worst finding on it, and the marked character ranges.
function markLines(diags, lineCount, lineLengths) {
  const sev = new Array(lineCount).fill("");
  const ranges = Array.from({ length: lineCount }, () => []);
  const notes = Array.from({ length: lineCount }, () => []);
  const rank = { "": 0, warning: 1, error: 2 };
  for (const d of diags) {
    if (d.line == null) continue;
    const first = d.line - 1;
    const last = Math.max(first, (d.endLine ?? d.line) - 1);
    for (let l = first; l <= last && l < lineCount; l++) {
      if (rank[d.severity] > rank[sev[l]]) sev[l] = d.severity;
      const from = l === first ? d.column - 1 : 0;
      let to = l === last ? (d.endColumn ?? d.column + 1) - 1 : lineLengths[l];
      if (to <= from) to = from + 1; // an empty span still gets a mark
      ranges[l].push([from, to, d.severity]);
    }
    if (first < lineCount) notes[first].push(`${d.severity}: ${d.message}`);
  }
  return { sev, ranges, notes };
}

function renderEditor() {
  const lines = editor.value.split("\n");
  const { sev, ranges, notes } = markLines(state.lastDiagnostics, lines.length, lines.map((l) => l.length));
  let html = "";
  let gut = "";
  lines.forEach((line, i) => {
    const tok = tokenize(line);
    const mark = new Array(Math.max(line.length, 1)).fill("");
    for (const [from, to, s] of ranges[i]) {
      for (let c = from; c < to && c < mark.length; c++) if (mark[c] !== "m-error") mark[c] = `m-${s}`;
    }
    let body = "";
    let run = "";
    let runCls = null;
    const flush = () => {
      if (!run) return;
      body += runCls ? `<span class="${runCls}">${escapeHtml(run)}</span>` : escapeHtml(run);
      run = "";
    };
    for (let c = 0; c < line.length; c++) {
      const k = [tok[c], mark[c]].filter(Boolean).join(" ");
      if (k !== runCls) { flush(); runCls = k; }
      run += line[c];
    }
    flush();
    // A mark past the end of the line (a missing value) shows as one marked space.
    if (line.length === 0 && mark[0]) body = `<span class="${mark[0]}"> </span>`;
    else if (ranges[i].some(([from]) => from >= line.length)) {
      const s = ranges[i].find(([from]) => from >= line.length)[2];
      body += `<span class="m-${s}"> </span>`;
    }
    html += `<span class="line${sev[i] ? ` hl-${sev[i]}` : ""}" data-line="${i + 1}">${body}\n</span>`;
    const title = notes[i].length ? ` title="${escapeHtml(notes[i].join("\n"))}"` : "";
    gut += `<div class="gl${sev[i] ? ` g-${sev[i]}` : ""}"${title}>${i + 1}</div>`;
  });
  backdrop.innerHTML = html;
  gutter.innerHTML = `<div class="gutter-inner">${gut}</div>`;
  syncScroll();
}

function syncScroll() {
  const x = editor.scrollLeft;
  const y = editor.scrollTop;
  backdrop.style.transform = `translate(${-x}px, ${-y}px)`;
  const inner = gutter.firstElementChild;
  if (inner) inner.style.transform = `translateY(${-y}px)`;
}

function updateCursor() {
  const before = editor.value.slice(0, editor.selectionStart);
  const line = before.split("\n").length;
  const col = before.length - before.lastIndexOf("\n");
  $("cursor").textContent = `${line}:${col}`;
}

function offsetOf(line, column) {
  const lines = editor.value.split("\n");
  let off = 0;
  for (let i = 0; i < line - 1 && i < lines.length; i++) off += lines[i].length + 1;
  return Math.min(off + Math.max(column - 1, 0), editor.value.length);
}

// Selects a span in the editor and scrolls it into view.
function jumpTo(d) {
  if (d.line == null) return;
  const start = offsetOf(d.line, d.column);
  const end = offsetOf(d.endLine ?? d.line, d.endColumn ?? d.column);
  editor.focus();
  editor.setSelectionRange(start, Math.max(start, end));
  const lh = parseFloat(getComputedStyle(editor).lineHeight) || 20;
  const top = (d.line - 1) * lh;
  if (top < editor.scrollTop || top > editor.scrollTop + editor.clientHeight - 2 * lh) {
    editor.scrollTop = Math.max(0, top - editor.clientHeight / 3);
  }
  syncScroll();
  updateCursor();
}

// ---------------------------------------------------------------------------------------
// Compile and show findings and the table

function loc(d) {
  return d.line == null ? "" : `${d.line}:${d.column}`;
}

function renderDiagnostics(report) {
  const list = $("diagnostics");
  list.innerHTML = "";
  const diags = report ? report.diagnostics : [];
  if (diags.length === 0) {
    list.innerHTML = `<li class="empty">No errors or warnings. The policy compiles.</li>`;
  }
  for (const d of diags) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.className = `diag ${d.severity}`;
    b.dataset.code = d.code;
    b.dataset.line = d.line ?? "";
    b.innerHTML = `
      <span class="sev">${d.severity}</span>
      <span class="body">
        <span class="msg">${richText(d.message)}</span>
        ${d.help ? `<span class="help"><b>help:</b> ${richText(d.help)}</span>` : ""}
        <span class="code">${escapeHtml(d.code)}${d.label ? ` · ${richText(d.label)}` : ""}</span>
      </span>
      <span class="loc">${d.line == null ? "" : `line ${d.line}:${d.column}`}</span>`;
    if (d.line == null) b.disabled = true;
    b.addEventListener("click", () => jumpTo(d));
    li.appendChild(b);
    for (const r of d.related || []) {
      const rb = document.createElement("button");
      rb.type = "button";
      rb.className = "related";
      rb.innerHTML = `↳ ${richText(r.message)} <span class="loc">${loc(r)}</span>`;
      rb.addEventListener("click", () => jumpTo(r));
      li.appendChild(rb);
    }
    list.appendChild(li);
  }
  const errors = report ? report.summary.errors : 0;
  const warnings = report ? report.summary.warnings : 0;
  const counts = $("counts");
  counts.innerHTML = errors + warnings === 0
    ? `<span class="ok">✓ compiles</span>`
    : `${errors ? `<span class="err">✕ ${plural(errors, "error")}</span>` : ""}` +
      `${warnings ? `<span class="warn">▲ ${plural(warnings, "warning")}</span>` : ""}`;
  counts.dataset.errors = errors;
  counts.dataset.warnings = warnings;
}

function renderTable(res) {
  const card = $("table-card");
  const meta = $("table-meta");
  const text = $("table-text");
  const download = $("download");
  if (!res.table) {
    state.tableBytes = null;
    card.classList.add("stale");
    card.dataset.digest = "";
    meta.textContent = "No table: the policy has errors.";
    text.textContent = "";
    download.disabled = true;
    return;
  }
  state.tableBytes = hexToBytes(res.tableHex);
  card.classList.remove("stale");
  card.dataset.digest = res.table.digest;
  card.dataset.size = res.table.size;
  const t = res.table;
  meta.innerHTML = `
    <span><b>${t.size}</b> bytes</span>
    <span><b>${plural(t.rules.length, "rule")}</b></span>
    <span><b>${t.policies.length === 1 ? "1 policy" : `${t.policies.length} policies`}</b></span>
    <span class="digest" title="sha256 of the policy inputs">digest ${escapeHtml(t.digest.slice(0, 12))}…</span>`;
  // The size, digest and policies lines repeat what is shown above.
  text.textContent = res.tableText
    .split("\n")
    .filter((l) => !/^(table|policies) /.test(l))
    .join("\n")
    .trimEnd();
  download.disabled = false;
}

function compileNow() {
  clearTimeout(state.timer);
  const t0 = performance.now();
  const request = {
    policies: [{ path: state.fileName, text: editor.value }],
    files: state.examples ? state.examples.files : {},
    now: Math.floor(Date.now() / 1000),
  };
  const res = call(certgate.compile, JSON.stringify(request));
  if (res.error) {
    setStatus(res.error, "bad");
    return;
  }
  state.lastDiagnostics = res.report.diagnostics;
  renderDiagnostics(res.report);
  renderEditor();
  renderTable(res);
  evaluateNow();
  const ms = (performance.now() - t0).toFixed(1);
  const { errors, warnings } = res.report.summary;
  setStatus(errors ? `${plural(errors, "error")} · ${ms} ms` : `compiled and evaluated in ${ms} ms`,
    errors ? "bad" : warnings ? "warn" : "good");
}

// ---------------------------------------------------------------------------------------
// Peer, certificate facts, decision

function peerKind() {
  return document.querySelector('input[name="peer-kind"]:checked').value;
}

function peerRequest() {
  const req = {};
  if (peerKind() === "cert") req.cert = $("cert").value;
  else req.identity = $("identity").value.trim();
  const tls = $("tls").value;
  if (tls) req.tlsVersion = tls;
  const port = $("port").value.trim();
  if (port) req.port = Number(port);
  const sni = $("sni").value.trim();
  if (sni) req.sni = sni;
  const ip = $("source-ip").value.trim();
  if (ip) req.sourceIp = ip;
  return req;
}

function cliCommand(req) {
  const q = (s) => (/^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, "'\\''")}'`);
  const base = state.fileName.replace(/\.ya?ml$/, "");
  const parts = ["certgate eval", `--table ${q(base)}.cgt`];
  if (req.cert !== undefined) parts.push("--cert peer.pem");
  else parts.push(`--identity ${q(req.identity || "…")}`);
  if (req.tlsVersion) parts.push(`--tls-version ${req.tlsVersion}`);
  if (req.port !== undefined) parts.push(`--port ${req.port}`);
  if (req.sni) parts.push(`--sni ${q(req.sni)}`);
  if (req.sourceIp) parts.push(`--source-ip ${q(req.sourceIp)}`);
  return parts.join(" ");
}

function renderCert() {
  const card = $("cert-card");
  const err = $("cert-error");
  const pem = $("cert").value;
  if (peerKind() !== "cert" || !pem.trim()) {
    card.hidden = true;
    err.hidden = true;
    return;
  }
  const res = call(certgate.inspect_cert, pem);
  if (res.error) {
    card.hidden = true;
    err.hidden = false;
    err.textContent = res.error;
    return;
  }
  err.hidden = true;
  card.hidden = false;
  const c = res.certificates[0];
  const key = c.key.algorithm === "RSA" ? `RSA ${c.key.bits} bits`
    : c.key.algorithm === "ECDSA" ? `ECDSA ${c.key.curve ?? "(unknown curve)"}`
    : c.key.algorithm === "other" ? `other (${c.key.oid})` : c.key.algorithm;
  const days = c.lifetimeSeconds / 86400;
  const lifetime = days >= 1 ? `${+days.toFixed(1)} d` : `${+(c.lifetimeSeconds / 3600).toFixed(1)} h`;
  const rows = [
    ["SPIFFE ID", c.spiffeId ?? "(none)"],
    ["subject", c.subject],
    ["issuer", c.issuer],
    ["serial", c.serial],
    ["valid", `${c.notBefore} → ${c.notAfter} (${lifetime})`],
    ["key", key],
    ["signature", `${c.signatureAlgorithm} (${c.signatureHash})`],
    ["sha256", c.sha256],
    ["certificate key", c.revocationKeys.tbsSha256],
    ["SPKI sha256", c.revocationKeys.spkiSha256],
  ];
  if (res.certificates.length > 1) rows.push(["bundle", `leaf + ${plural(res.certificates.length - 1, "more certificate")}`]);
  const dl = $("cert-facts");
  dl.innerHTML = rows.map(([k, v]) => `<dt>${k}</dt><dd>${escapeHtml(v)}</dd>`).join("");
  card.dataset.sha256 = c.sha256;
  card.dataset.spiffeId = c.spiffeId ?? "";
  card.dataset.serial = c.serial;
}

function setDecision(fields) {
  const box = $("decision");
  for (const k of ["action", "reason", "rule", "policy", "mode", "identity", "admitted"]) {
    box.dataset[k] = fields[k] == null ? "" : String(fields[k]);
  }
}

function evaluateNow() {
  renderCert();
  const box = $("decision");
  const verdict = $("verdict");
  const facts = $("decision-facts");
  const req = peerRequest();
  box.dataset.error = "";
  if (!state.tableBytes) {
    setDecision({});
    box.className = "card decision-card none";
    verdict.textContent = "—";
    $("reason").textContent = "";
    $("explain").textContent = "Fix the errors in the policy to see decisions.";
    $("decision-mode").textContent = "";
    facts.innerHTML = "";
    return;
  }
  const d = call(certgate.evaluate, state.tableBytes, JSON.stringify(req));
  if (d.error) {
    setDecision({});
    box.dataset.error = d.error;
    box.className = "card decision-card none";
    verdict.textContent = "?";
    $("reason").textContent = "";
    $("explain").innerHTML = richText(d.error);
    facts.innerHTML = "";
    return;
  }
  setDecision(d);
  const audit = d.mode === "audit";
  box.className = `card decision-card ${d.action}${audit ? " audit" : ""}`;
  verdict.textContent = d.action === "allow" ? "ALLOW" : "DENY";
  $("reason").textContent = d.reason;
  $("explain").innerHTML = richText(REASONS[d.reason] ?? "");
  $("decision-mode").textContent = `${d.mode} mode`;
  const rows = [
    ["rule", d.rule ?? "—"],
    ["policy", d.policy ?? "—"],
    ["identity", d.identity ?? "—"],
    ["connection", d.admitted
      ? (d.action === "deny" ? "admitted (audit mode records the would-be deny)" : "admitted")
      : "closed"],
  ];
  facts.innerHTML = rows.map(([k, v]) => `<dt>${k}</dt><dd>${escapeHtml(v)}</dd>`).join("") +
    `<dt>CLI</dt><dd><code class="cli">${escapeHtml(cliCommand(req))}</code></dd>`;
}

// ---------------------------------------------------------------------------------------
// Examples and wiring

function applyPreset(name) {
  const p = PRESETS[name];
  if (!p) return; // keep the peer the person set up
  document.querySelector(`input[name="peer-kind"][value="${p.kind}"]`).checked = true;
  $("identity").value = p.identity ?? "";
  if (p.cert) selectCert(p.cert);
  $("tls").value = p.tls;
  $("port").value = p.port;
  $("sni").value = p.sni;
  $("source-ip").value = p.sourceIp;
  showPeerKind();
}

function selectCert(name) {
  const c = state.examples.certificates.find((x) => x.name === name);
  $("cert-sample").value = c ? name : "";
  if (c) $("cert").value = c.text;
}

function showPeerKind() {
  const cert = peerKind() === "cert";
  $("cert-field").hidden = !cert;
  $("identity-field").hidden = cert;
}

function loadExample(name) {
  const ex = state.examples.policies.find((p) => p.name === name);
  if (!ex) return;
  state.fileName = ex.name;
  $("file-name").textContent = ex.name;
  $("example").value = ex.name;
  editor.value = ex.text;
  editor.scrollTop = 0;
  applyPreset(ex.name);
  compileNow();
}

function downloadTable() {
  if (!state.tableBytes) return;
  const blob = new Blob([state.tableBytes], { type: "application/octet-stream" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = state.fileName.replace(/\.ya?ml$/, "") + ".cgt";
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

// A link holds the policy and the peer in its fragment, so it can be shared without a
// server and never reaches one (browsers do not send the fragment).
function encodeState() {
  const state_ = {
    v: 1, file: state.fileName, policy: editor.value, kind: peerKind(),
    identity: $("identity").value, cert: $("cert").value, tls: $("tls").value,
    port: $("port").value, sni: $("sni").value, sourceIp: $("source-ip").value,
  };
  const bytes = new TextEncoder().encode(JSON.stringify(state_));
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function decodeState(text) {
  try {
    const bin = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
    const s = JSON.parse(new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0))));
    return s && s.v === 1 && typeof s.policy === "string" ? s : null;
  } catch {
    return null;
  }
}

function loadShared(s) {
  state.fileName = typeof s.file === "string" && s.file ? s.file : "policy.yaml";
  $("file-name").textContent = state.fileName;
  if (state.examples.policies.some((p) => p.name === state.fileName)) $("example").value = state.fileName;
  editor.value = s.policy;
  const kind = s.kind === "cert" ? "cert" : "identity";
  document.querySelector(`input[name="peer-kind"][value="${kind}"]`).checked = true;
  $("identity").value = s.identity ?? "";
  $("cert").value = s.cert ?? "";
  $("cert-sample").value = state.examples.certificates.find((c) => c.text === s.cert)?.name ?? "";
  $("tls").value = s.tls ?? "";
  $("port").value = s.port ?? "";
  $("sni").value = s.sni ?? "";
  $("source-ip").value = s.sourceIp ?? "";
  showPeerKind();
  compileNow();
}

async function share() {
  history.replaceState(null, "", `#s=${encodeState()}`);
  try {
    await navigator.clipboard.writeText(location.href);
    setStatus("link copied: it holds the policy and the peer", "good");
  } catch {
    setStatus("the address bar now holds the policy and the peer", "good");
  }
}

function wire() {
  editor.addEventListener("input", () => { renderEditor(); debounce(compileNow, 150); });
  editor.addEventListener("scroll", syncScroll);
  for (const ev of ["keyup", "click", "select"]) editor.addEventListener(ev, updateCursor);
  editor.addEventListener("keydown", (e) => {
    // Two spaces for Tab would trap keyboard users in the editor; Tab moves on, but
    // Enter keeps the current line's indentation, as YAML needs.
    if (e.key === "Enter" && !e.ctrlKey && !e.metaKey && !e.altKey && !e.shiftKey) {
      const start = editor.selectionStart;
      const lineStart = editor.value.lastIndexOf("\n", start - 1) + 1;
      const indent = /^[ ]*(- )?/.exec(editor.value.slice(lineStart, start))[0].replace("-", " ");
      if (indent) {
        e.preventDefault();
        editor.setRangeText(`\n${indent}`, start, editor.selectionEnd, "end");
        editor.dispatchEvent(new Event("input"));
      }
    }
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      compileNow();
    }
  });
  $("example").addEventListener("change", (e) => loadExample(e.target.value));
  for (const r of document.querySelectorAll('input[name="peer-kind"]')) {
    r.addEventListener("change", () => { showPeerKind(); evaluateNow(); });
  }
  for (const id of ["identity", "tls", "port", "sni", "source-ip", "cert"]) {
    $(id).addEventListener("input", () => debounce(evaluateNow, 120));
  }
  $("cert-sample").addEventListener("change", (e) => {
    if (e.target.value) selectCert(e.target.value);
    evaluateNow();
  });
  $("cert").addEventListener("input", () => { $("cert-sample").value = ""; });
  $("cert-file").addEventListener("change", async (e) => {
    const f = e.target.files[0];
    if (!f) return;
    // A DER file is shown as PEM: the same bytes, in the form the text field holds.
    const bytes = new Uint8Array(await f.arrayBuffer());
    const text = new TextDecoder().decode(bytes);
    if (text.includes("-----BEGIN")) {
      $("cert").value = text;
    } else {
      const b64 = btoa(String.fromCharCode(...bytes)).replace(/.{64}/g, "$&\n").trimEnd();
      $("cert").value = `-----BEGIN CERTIFICATE-----\n${b64}\n-----END CERTIFICATE-----\n`;
    }
    $("cert-sample").value = "";
    evaluateNow();
  });
  $("download").addEventListener("click", downloadTable);
  $("share").addEventListener("click", share);
}

async function main() {
  try {
    await init();
    const res = await fetch("examples.json");
    state.examples = await res.json();
  } catch (e) {
    setStatus(`could not load the compiler: ${e.message ?? e}`, "bad");
    return;
  }
  $("version").textContent = `certgate ${certgate.version()}`;
  REASONS = JSON.parse(certgate.reasons()).reasons;
  $("example").innerHTML = state.examples.policies
    .map((p) => `<option value="${escapeHtml(p.name)}">${escapeHtml(p.name)}</option>`).join("");
  $("cert-sample").innerHTML = `<option value="">sample…</option>` + state.examples.certificates
    .map((c) => `<option value="${escapeHtml(c.name)}">${escapeHtml(c.name)}</option>`).join("");
  wire();
  const shared = location.hash.startsWith("#s=") ? decodeState(location.hash.slice(3)) : null;
  if (shared) {
    loadShared(shared);
  } else {
    const first = state.examples.policies.find((p) => p.name === "zero-trust.yaml") ?? state.examples.policies[0];
    loadExample(first.name);
  }
  document.body.dataset.ready = "true";
}

main();
