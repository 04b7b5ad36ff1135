// Review actions (docs/review-api.md, "Actions"), from the panel's buttons, the canvas edits
// and the keyboard. Each is one POST .../actions with the X-CSRF-Token header (api.js).
import { api } from "./api.js";
import { defaultWindow } from "./pixels.js";
import { ask, toast, typing } from "./dialog.js";
import {
  ensureHeatmap, getView, redraw, refreshPanel, setFrame, setMode, setOpacity,
  setWindow, state, updateCase,
} from "./viewer.js";
import { openNext } from "./worklist.js";

/** Send one action; a case still `new` is claimed first (new -> in_review). */
async function act(body) {
  const c = state.case;
  if (c.status === "new" && body.action !== "claim") {
    await updateCase(await api.act(c.id, { action: "claim" }));
  }
  await updateCase(await api.act(state.case.id, body));
}

function selectedFinding() {
  const f = state.case.findings.find((x) => x.id === state.selected);
  if (!f) throw new Error("select a finding first (Tab, or click it)");
  return f;
}

async function reject(wholeCase) {
  const what = wholeCase ? "the whole case" : `finding ${selectedFinding().label}`;
  const reason = await ask(`Reason for rejecting ${what}`, { required: true });
  if (reason === null) return;
  const body = { action: "reject", reason };
  if (!wholeCase) body.finding_id = state.selected;
  await act(body);
}

async function relabel() {
  const f = selectedFinding();
  const label = await ask(`New label for ${f.label}`, { choices: state.case.labels, value: f.label });
  if (label && label !== f.label) await act({ action: "relabel", finding_id: f.id, label });
}

async function comment() {
  const text = await ask("Comment", { required: true });
  if (text) await act({ action: "comment", text });
}

async function addBox(box) {
  setMode("view");
  const label = await ask("Label of the new finding", { choices: state.case.labels });
  state.preview = null;
  if (label) await act({ action: "add", label, box, frame: state.frame });
  redraw();
}

async function saveMask() {
  const mask = state.masks.get(state.maskLabel);
  if (!mask || !mask.dirty) return;
  const png = await mask.pngBase64();
  await act({ action: "paint", label: mask.label, mask_png_b64: png, frame: mask.frame });
  mask.dirty = false;
  state.maskDirty = false;
  refreshPanel();
}

async function next() {
  if (state.maskDirty) await saveMask();
  const found = await openNext(state.case.id);
  if (!found) toast("No case left to review.", true);
}

async function selectFinding(id) {
  state.selected = id;
  await ensureHeatmap();
  refreshPanel();
  redraw();
}

function cycleFinding(step) {
  const ids = frameFindings().map((f) => f.id);
  if (!ids.length) return;
  const i = ids.indexOf(state.selected);
  return selectFinding(ids[(i + step + ids.length) % ids.length]);
}

async function toggleHeatmap(on = !state.heatmap) {
  state.heatmap = on;
  await ensureHeatmap();
  refreshPanel();
  redraw();
}

function preset(index) {
  if (!state.pixels) return;
  const image = state.case.image;
  const p = index < 0 ? defaultWindow(image, state.pixels) : image.presets?.[index];
  if (p) setWindow({ center: p.center, width: p.width });
}

function paintMode(mode) {
  if (!state.maskLabel) throw new Error("this case has no mask label to paint");
  if (!state.masks.has(state.maskLabel)) {
    throw new Error(`no mask "${state.maskLabel}" loaded for this case`);
  }
  setMode(state.mode === mode ? "view" : mode);
}

const COMMANDS = {
  accept: () => act({ action: "accept", finding_id: selectedFinding().id }),
  "accept-case": () => act({ action: "accept" }),
  reject: () => reject(false),
  "reject-case": () => reject(true),
  relabel,
  comment,
  finish: () => act({ action: "finish" }),
  reopen: () => act({ action: "reopen" }),
  next,
  "save-mask": saveMask,
  audit: async () => {
    state.audit = await api.audit(state.case.id);
    refreshPanel();
  },
};

const KEYS = {
  a: "accept", A: "accept-case", r: "reject", R: "reject-case", l: "relabel", c: "comment",
  f: "finish", n: "next",
};

function run(promiseOrValue) {
  Promise.resolve()
    .then(() => promiseOrValue())
    .catch((err) => toast(err.message));
}

function onPanelClick(e) {
  const el = e.target.closest("[data-cmd]");
  if (!el) return;
  const cmd = el.dataset.cmd;
  if (COMMANDS[cmd]) run(COMMANDS[cmd]);
  else if (cmd === "select" && !e.target.matches("input")) run(() => selectFinding(idOf(el.dataset.finding)));
  else if (cmd === "mode") run(() => (el.dataset.mode === "add" ? setMode(state.mode === "add" ? "view" : "add") : paintMode(el.dataset.mode)));
  else if (cmd === "preset") preset(Number(el.dataset.index));
}

function onPanelInput(e) {
  const el = e.target;
  const cmd = el.dataset.cmd;
  if (cmd === "toggle-box") toggleIn(state.hiddenBoxes, idOf(el.dataset.finding), !el.checked);
  else if (cmd === "toggle-mask") toggleIn(state.hiddenMasks, el.dataset.label, !el.checked);
  else if (cmd === "heatmap") run(() => toggleHeatmap(el.checked));
  else if (cmd === "opacity") setOpacity(Number(el.value) / 100);
  else if (cmd === "frame") run(() => setFrame(Number(el.value) - 1));
  else if (cmd === "brush") state.brush = Number(el.value);
  else if (cmd === "mask-target") state.maskLabel = el.dataset.label;
  redraw();
}

/** The finding id (a number from the API) that a data-finding attribute names. */
function idOf(text) {
  const f = state.case.findings.find((x) => String(x.id) === text);
  return f ? f.id : text;
}

function toggleIn(set, key, hide) {
  if (hide) set.add(key);
  else set.delete(key);
}

function onKey(e) {
  if (document.getElementById("viewer-view").hidden || typing(e) || e.ctrlKey || e.metaKey) return;
  const k = e.key;
  if (KEYS[k]) run(COMMANDS[KEYS[k]]);
  else if (k === "Tab") run(() => cycleFinding(e.shiftKey ? -1 : 1));
  else if (k === "b") setMode(state.mode === "add" ? "view" : "add");
  else if (k === "p" || k === "e") run(() => paintMode(k === "p" ? "paint" : "erase"));
  else if (k === "h") run(() => toggleHeatmap());
  else if (k === "m") state.showMasks = !state.showMasks;
  else if (k === "o") state.showBoxes = !state.showBoxes;
  else if (k === "[" || k === "]") state.brush = Math.max(1, state.brush + (k === "]" ? 2 : -2));
  else if (k === "0") getView().reset();
  else if (/^[1-9]$/.test(k)) preset(Number(k) - 1);
  else if (k === "ArrowUp" || k === "PageUp") run(() => setFrame(state.frame - 1));
  else if (k === "ArrowDown" || k === "PageDown") run(() => setFrame(state.frame + 1));
  else if (k === "Escape") {
    if (state.mode !== "view") setMode("view");
    else location.hash = "#/";
  } else return;
  e.preventDefault();
  redraw();
}

/** The canvas edit callbacks for viewer.initViewer. */
export const editHost = {
  select: (id) => run(() => selectFinding(id)),
  previewBox: (id, box) => {
    state.preview = box ? { id, box } : null;
  },
  boxChanged: (id, box) => run(() => act({ action: "move", finding_id: id, box })),
  boxDrawn: (box) => run(() => addBox(box)),
  brush: (x, y, erase) => {
    const mask = state.masks.get(state.maskLabel);
    if (!mask) return;
    mask.brush(x, y, state.brush, erase ? 0 : 1);
    state.maskDirty = true;
  },
  brushDone: () => refreshPanel(),
  saveMask: () => saveMask(),
};

/** Wire the panel and the keyboard (once). */
export function initReview() {
  const panel = document.getElementById("panel");
  panel.addEventListener("click", onPanelClick);
  panel.addEventListener("input", onPanelInput);
  document.addEventListener("keydown", onKey);
}

