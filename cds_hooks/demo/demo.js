// Demo EHR: loads synthetic patients, calls the CDS service like an EHR, renders cards.
"use strict";

const EXPLANATION = "org.moe-health.explanation";
const state = { patients: [], byId: new Map() };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function escapeHtml(s) {
  return s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

// The small Markdown subset the cards use: paragraphs, **bold**, "- " lists, "> " quotes.
function renderMarkdown(md) {
  const out = [];
  let list = null;
  const inline = (t) => escapeHtml(t).replace(/\*\*(.+?)\*\*/g, "<strong>$1</strong>");
  for (const line of md.split("\n")) {
    if (line.startsWith("- ")) {
      if (!list) { list = []; }
      list.push("<li>" + inline(line.slice(2)) + "</li>");
      continue;
    }
    if (list) { out.push("<ul>" + list.join("") + "</ul>"); list = null; }
    if (line.startsWith("> ")) out.push("<blockquote>" + inline(line.slice(2)) + "</blockquote>");
    else if (line.trim()) out.push("<p>" + inline(line) + "</p>");
  }
  if (list) out.push("<ul>" + list.join("") + "</ul>");
  return out.join("");
}

function uuid() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  return "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx".replace(/[xy]/g, (c) => {
    const r = (Math.random() * 16) | 0;
    return (c === "x" ? r : (r & 0x3) | 0x8).toString(16);
  });
}

function setStatus(text, isError) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.className = isError ? "status error" : "status";
}

async function sendFeedback(serviceId, body) {
  const resp = await fetch(`/cds-services/${serviceId}/feedback`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  setStatus(resp.ok ? "Feedback recorded." : `Feedback failed (HTTP ${resp.status}).`, !resp.ok);
}

function renderCard(card, serviceId) {
  const node = el("article", { class: `card ${card.indicator}`, "data-card-uuid": card.uuid });
  node.append(el("div", { class: "indicator" }, card.indicator));
  node.append(el("h3", { class: "summary" }, card.summary));
  const detail = el("div", { class: "detail" });
  detail.innerHTML = renderMarkdown(card.detail || "");
  node.append(detail);
  const src = el("div", { class: "source" }, "Source: ");
  src.append(card.source.url ? el("a", { href: card.source.url, target: "_blank", rel: "noopener" }, card.source.label) : card.source.label);
  node.append(src);
  const actions = el("div", { class: "actions" });
  for (const s of card.suggestions || []) {
    const b = el("button", { type: "button" }, s.label);
    b.addEventListener("click", () => sendFeedback(serviceId, { feedback: [{
      card: card.uuid, outcome: "accepted", acceptedSuggestions: [{ id: s.uuid }],
      outcomeTimestamp: new Date().toISOString() }] }));
    actions.append(b);
  }
  if ((card.overrideReasons || []).length) {
    const sel = el("select", { "aria-label": "Override reason" }, el("option", { value: "" }, "Dismiss: choose a reason"));
    card.overrideReasons.forEach((r, i) => sel.append(el("option", { value: String(i) }, r.display)));
    sel.addEventListener("change", () => {
      if (sel.value === "") return;
      const r = card.overrideReasons[Number(sel.value)];
      sendFeedback(serviceId, { feedback: [{ card: card.uuid, outcome: "overridden",
        overrideReason: { reason: { code: r.code, system: r.system, display: r.display } },
        outcomeTimestamp: new Date().toISOString() }] });
      node.style.opacity = "0.5";
    });
    actions.append(sel);
  }
  node.append(actions);
  return node;
}

// Gate weights as a horizontal bar chart (inline SVG, no library).
function renderGateChart(weights) {
  const box = document.getElementById("gate-chart");
  box.replaceChildren();
  const entries = Object.entries(weights || {}).sort((a, b) => b[1] - a[1]);
  if (!entries.length) return;
  const ns = "http://www.w3.org/2000/svg";
  const rowH = 24, labelW = 90, barW = 320;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("id", "gate-svg");
  svg.setAttribute("width", String(labelW + barW + 60));
  svg.setAttribute("height", String(entries.length * rowH + 4));
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "Gate weight per expert");
  entries.forEach(([name, w], i) => {
    const y = i * rowH + 2;
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", "0"); label.setAttribute("y", String(y + 16));
    label.textContent = name;
    const bar = document.createElementNS(ns, "rect");
    bar.setAttribute("class", "gate-bar");
    bar.setAttribute("x", String(labelW)); bar.setAttribute("y", String(y + 4));
    bar.setAttribute("width", String(Math.max(1, w * barW))); bar.setAttribute("height", "16");
    bar.setAttribute("fill", "#4f86c6");
    const val = document.createElementNS(ns, "text");
    val.setAttribute("x", String(labelW + w * barW + 6)); val.setAttribute("y", String(y + 16));
    val.textContent = `${Math.round(w * 100)}%`;
    svg.append(label, bar, val);
  });
  box.append(el("h4", {}, "Expert gate weights (E = vitals & labs, T = notes, I = chest X-ray)"), svg);
}

async function openChart() {
  const pid = document.getElementById("patient-select").value;
  const serviceId = document.getElementById("service-select").value;
  const patient = state.byId.get(pid);
  const cardsBox = document.getElementById("cards");
  cardsBox.replaceChildren();
  renderGateChart({});
  if (!patient) { setStatus("Select a patient first.", true); return; }
  document.getElementById("patient-banner").textContent =
    `${patient.label} \u00b7 available data: ${patient.pattern}`;
  setStatus(`Calling ${serviceId}\u2026`);
  const context = { userId: "Practitioner/demo", patientId: patient.patientId, encounterId: patient.encounterId };
  const body = { hook: serviceId, hookInstance: uuid(), context, prefetch: patient.prefetch };
  const t0 = performance.now();
  let resp;
  try {
    resp = await fetch(`/cds-services/${serviceId}`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
  } catch (err) {
    setStatus(`The CDS service could not be reached: ${err}`, true);
    return;
  }
  const data = await resp.json();
  if (!resp.ok) {
    const msg = (data.issue && data.issue[0] && data.issue[0].diagnostics) || resp.statusText;
    setStatus(`HTTP ${resp.status}: ${msg}`, true);
    return;
  }
  const ms = Math.round(performance.now() - t0);
  if (!data.cards.length) {
    setStatus(`No cards (the model abstained) \u00b7 ${ms} ms`);
    cardsBox.append(el("p", { class: "no-cards" }, "No guidance for this patient."));
    return;
  }
  setStatus(`${data.cards.length} card(s) \u00b7 ${ms} ms`);
  for (const card of data.cards) cardsBox.append(renderCard(card, serviceId));
  const ext = (data.cards[0].extension || {})[EXPLANATION];
  if (ext) renderGateChart(ext.gateWeights);
}

async function init() {
  const select = document.getElementById("patient-select");
  const list = document.getElementById("patient-list");
  const resp = await fetch("/demo/patients.json");
  state.patients = await resp.json();
  select.replaceChildren(el("option", { value: "" }, "Choose a synthetic patient"));
  for (const p of state.patients) {
    state.byId.set(p.id, p);
    select.append(el("option", { value: p.id }, `${p.label} (${p.pattern})`));
    const li = el("li", { "data-patient": p.id }, `${p.pattern}: ${p.label}`);
    li.addEventListener("click", () => { select.value = p.id; openChart(); });
    list.append(li);
  }
  select.addEventListener("change", openChart);
  document.getElementById("open-chart").addEventListener("click", openChart);
  document.getElementById("service-select").addEventListener("change", () => { if (select.value) openChart(); });
  const wanted = new URLSearchParams(location.search).get("patient");
  if (wanted && state.byId.has(wanted)) { select.value = wanted; openChart(); }
  document.body.dataset.ready = "true";
}

init().catch((err) => setStatus(`Demo failed to load: ${err}`, true));
