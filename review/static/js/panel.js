// The side panel of the viewer, drawn from the viewer's state; its controls carry
// data-cmd attributes that the viewer handles (one delegated listener).
import { labelColor } from "./view.js";
import { currentMasks } from "./overlays.js";

const esc = (v) =>
  String(v ?? "").replace(/[&<>"']/g, (c) =>
    ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

const score = (v) => (v == null ? "–" : Number(v).toFixed(3));

function header(c, state) {
  const patient = Object.entries(c.patient || {})
    .map(([k, v]) => `<div class="row"><span>${esc(k.replace(/_/g, " "))}</span> <b>${esc(v)}</b></div>`)
    .join("");
  const ohif = state.ohifUrl
    ? `<a id="open-ohif" href="${esc(state.ohifUrl)}" target="_blank" rel="noopener">Open study in OHIF</a>`
    : "";
  return `
    <h2>Case ${esc(c.id)}</h2>
    <div class="row"><span id="case-status" class="status status-${esc(c.status)}">${esc(c.status.replace("_", " "))}</span>
      <span>${esc(c.model)} v${esc(c.model_version)}</span><span>${esc(c.source)}</span></div>
    <div class="row"><span>${esc(c.kind)}</span><span>image score ${score(c.image_score)}</span>
      ${c.reviewer ? `<span>reviewer ${esc(c.reviewer)}</span>` : ""}</div>
    ${patient}${ohif ? `<div class="row">${ohif}</div>` : ""}`;
}

function windowing(c, state) {
  const image = c.image;
  if (!image.dicom) return "";
  const presets = (image.presets || [])
    .map((p, i) => `<button type="button" data-cmd="preset" data-index="${i}" title="${i + 1}">${esc(p.name)}</button>`)
    .join("");
  const frames = image.frames > 1
    ? `<div class="row">Frame <input id="frame-slider" type="range" min="1" max="${image.frames}" value="${state.frame + 1}" data-cmd="frame">
        <span id="frame-label">${state.frame + 1} / ${image.frames}</span></div>`
    : "";
  const w = state.window;
  return `
    <h2>Window</h2>
    <div class="row">${presets}<button type="button" data-cmd="preset" data-index="-1">Default</button></div>
    <div class="row" id="window-label">C ${w ? Math.round(w.center) : "–"} · W ${w ? Math.round(w.width) : "–"}
      <span class="hint">right-drag to adjust</span></div>${frames}`;
}

function finding(f, state) {
  const selected = f.id === state.selected ? " selected" : "";
  const shown = !state.hiddenBoxes.has(f.id);
  return `
    <div class="finding${selected}" data-cmd="select" data-finding="${esc(f.id)}" data-finding-id="${esc(f.id)}">
      <div class="row">
        <input type="checkbox" data-cmd="toggle-box" data-finding="${esc(f.id)}" ${shown ? "checked" : ""} title="show box">
        <span class="swatch" style="background:${labelColor(f.label)}"></span>
        <b class="label">${esc(f.label)}</b> <span class="score">${f.origin === "human" ? "" : score(f.score)}</span>
        <span class="origin">${esc(f.origin)}</span>
        <span class="finding-status finding-status-${esc(f.status)}">${esc(f.status)}</span>
      </div>
      ${f.reason ? `<div class="row reason">reason: ${esc(f.reason)}</div>` : ""}
    </div>`;
}

function findings(c, state) {
  const here = c.findings.filter((f) => (f.frame ?? 0) === state.frame);
  const title = c.image.frames > 1
    ? `<h2>Findings <span class="hint" id="findings-frame">frame ${state.frame + 1}: ${here.length} of ${c.findings.length}</span></h2>`
    : "<h2>Findings</h2>";
  if (!here.length) return `${title}<p class="hint">none</p>`;
  const sel = here.find((f) => f.id === state.selected);
  const heat = sel?.has_heatmap
    ? `<div class="row"><label><input id="heatmap-toggle" type="checkbox" data-cmd="heatmap" ${state.heatmap ? "checked" : ""}> Heat map (h)</label>
        <input id="heatmap-opacity" type="range" min="0" max="100" value="${Math.round(state.opacity * 100)}" data-cmd="opacity" aria-label="heat map opacity"></div>`
    : "";
  return `
    ${title}${here.map((f) => finding(f, state)).join("")}
    <div class="row">
      <button type="button" data-cmd="accept" id="btn-accept">Accept (a)</button>
      <button type="button" data-cmd="reject" id="btn-reject">Reject (r)</button>
      <button type="button" data-cmd="relabel" id="btn-relabel">Relabel (l)</button>
    </div>${heat}`;
}

function masks(c, state) {
  if (c.kind !== "segmentation" && !c.masks.length) return "";
  const rows = currentMasks(c).map((m) => `
    <div class="row mask" data-mask="${esc(m.label)}">
      <input type="checkbox" data-cmd="toggle-mask" data-label="${esc(m.label)}" ${state.hiddenMasks.has(m.label) ? "" : "checked"}>
      <span class="swatch" style="background:${labelColor(m.label)}"></span>
      <label><input type="radio" name="mask-target" data-cmd="mask-target" data-label="${esc(m.label)}" ${state.maskLabel === m.label ? "checked" : ""}> ${esc(m.label)}</label>
      <span class="origin">${esc(m.origin)}</span>
    </div>`).join("");
  return `
    <h2>Masks</h2>${rows}
    <div class="row">
      <button type="button" data-cmd="mode" data-mode="paint" id="btn-paint">Paint (p)</button>
      <button type="button" data-cmd="mode" data-mode="erase" id="btn-erase">Erase (e)</button>
      <label>Brush <input id="brush-size" type="range" min="1" max="100" value="${state.brush}" data-cmd="brush"></label>
      <button type="button" data-cmd="save-mask" id="btn-save-mask" ${state.maskDirty ? "" : "disabled"}>Save mask</button>
    </div>`;
}

function actions(c, state) {
  const reopen = state.canReopen
    ? '<button type="button" data-cmd="reopen" id="btn-reopen">Reopen</button>' : "";
  return `
    <h2>Case</h2>
    <div class="row">
      <button type="button" data-cmd="mode" data-mode="add" id="btn-add">Add box (b)</button>
      <button type="button" data-cmd="comment" id="btn-comment">Comment (c)</button>
      <button type="button" data-cmd="accept-case" id="btn-accept-case">Accept case (A)</button>
      <button type="button" data-cmd="reject-case" id="btn-reject-case">Reject case (R)</button>
      <button type="button" data-cmd="finish" id="btn-finish">Finish (f)</button>
      <button type="button" data-cmd="next" id="btn-next">Next (n)</button>${reopen}
    </div>`;
}

function comments(c) {
  const items = (c.comments || [])
    .map((m) => `<li><b>${esc(m.user)}</b> ${esc(m.time)}: ${esc(m.text)}</li>`).join("");
  return items ? `<h2>Comments</h2><ul class="comments">${items}</ul>` : "";
}

function history(state) {
  if (!state.audit) {
    return '<h2>History</h2><button type="button" data-cmd="audit" id="btn-audit">Show history</button>';
  }
  const items = state.audit.map((a) =>
    `<li data-action="${esc(a.action)}">#${esc(a.seq)} ${esc(a.time)} <b>${esc(a.user)}</b> ${esc(a.action)}${a.finding_id != null ? ` (${esc(a.finding_id)})` : ""}</li>`).join("");
  return `<h2>History</h2><ul class="audit" id="audit-list">${items}</ul>`;
}

const HELP = `
  <h2>Keys</h2><ul class="shortcuts">
  <li><kbd>Tab</kbd> next finding</li><li><kbd>a</kbd> accept</li><li><kbd>r</kbd> reject</li>
  <li><kbd>l</kbd> relabel</li><li><kbd>b</kbd> add box</li><li><kbd>p</kbd>/<kbd>e</kbd> paint/erase</li>
  <li><kbd>[</kbd>/<kbd>]</kbd> brush</li><li><kbd>c</kbd> comment</li><li><kbd>f</kbd> finish</li>
  <li><kbd>n</kbd> next case</li><li><kbd>h</kbd> heat map</li><li><kbd>m</kbd> masks</li>
  <li><kbd>o</kbd> boxes</li><li><kbd>0</kbd> fit</li><li><kbd>1</kbd>–<kbd>9</kbd> presets</li>
  <li><kbd>↑</kbd>/<kbd>↓</kbd> frame</li><li><kbd>Esc</kbd> worklist</li></ul>`;

/** Redraw the whole panel from the viewer state. */
export function renderPanel(panel, state) {
  const c = state.case;
  const list = `<section id="findings-section">${findings(c, state)}</section>`;
  panel.innerHTML = [header(c, state), windowing(c, state), list, masks(c, state),
    actions(c, state), comments(c), history(state), HELP].join("");
}

/** Update only the findings (those of the frame shown), leaving the frame slider as it is. */
export function renderFindings(state) {
  const el = document.getElementById("findings-section");
  if (el) el.innerHTML = findings(state.case, state);
}

/** Update only the window/level readout (cheap, during right-drag). */
export function renderWindowLabel(state) {
  const el = document.getElementById("window-label");
  if (el && state.window) {
    el.firstChild.textContent = `C ${Math.round(state.window.center)} · W ${Math.round(state.window.width)} `;
  }
}
