// The case viewer: loads a case, its pixels (DICOM: raw values, window/level here; else the
// PNG), masks and the selected finding's heat map, and draws them on the canvas.
import { api } from "./api.js";
import { currentMasks, loadHeatmap, Mask } from "./overlays.js";
import { renderFindings, renderPanel, renderWindowLabel } from "./panel.js";
import { applyWindow, defaultWindow, loadPixels, loadPng } from "./pixels.js";
import { attachPointer } from "./pointer.js";
import { labelColor, View } from "./view.js";

const OPACITY = "review.heatmapOpacity";

/** Everything the viewer shows; review.js changes it through the functions below. */
export const state = {
  case: null,
  user: null,
  frame: 0,
  window: null,
  pixels: null,
  selected: null,
  hiddenBoxes: new Set(),
  hiddenMasks: new Set(),
  showBoxes: true,
  showMasks: true,
  heatmap: false,
  opacity: Number(localStorage.getItem(OPACITY) ?? 0.45),
  heatmaps: new Map(),
  masks: new Map(),
  maskLabel: null,
  maskDirty: false,
  brush: 12,
  mode: "view",
  preview: null, // {id, box} while a box is dragged or drawn
  audit: null,
  ohifUrl: "",
  canReopen: false,
  bytes: 0,
};

let view = null;
let imageCanvas = null;
let firstDrawn = false;
let frameRequest = 0;
let ohifAvailable = null;
let hooks = {}; // review.js's edit callbacks (saveMask before the frame changes)

/** Schedule a redraw of the canvas on the next animation frame. */
export function redraw() {
  if (frameRequest) return;
  frameRequest = requestAnimationFrame(() => {
    frameRequest = 0;
    drawNow();
  });
}

function drawNow() {
  const layers = [];
  if (state.showMasks) {  // the masks of the frame shown (loadMasks)
    for (const [label, mask] of state.masks) {
      const shown = mask.frame === state.frame && !state.hiddenMasks.has(label);
      if (shown) layers.push({ image: mask.canvas, alpha: 0.45 });
    }
  }
  const selected = state.case.findings.find((f) => f.id === state.selected);
  const heat = state.heatmap && selected && onFrame(selected) && state.heatmaps.get(state.selected);
  if (heat) layers.push({ image: heat, alpha: state.opacity });
  view.draw(layers, drawBoxes);
  const status = document.getElementById("status-line");
  status.textContent = `${Math.round(view.scale * 100)} %` +
    (state.window ? ` · C ${Math.round(state.window.center)} W ${Math.round(state.window.width)}` : "") +
    (state.case.image.frames > 1 ? ` · frame ${state.frame + 1}/${state.case.image.frames}` : "");
}

/** Whether finding `f` lies on the frame shown (findings carry their 0-based frame). */
export function onFrame(f) {
  return (f.frame ?? 0) === state.frame;
}

/** The findings of the frame shown. */
export function frameFindings() {
  return state.case.findings.filter(onFrame);
}

function drawBoxes(ctx, v) {
  if (!state.showBoxes) return;
  const items = frameFindings().filter((f) => f.box && !state.hiddenBoxes.has(f.id));
  for (const f of items) {
    const box = state.preview && state.preview.id === f.id ? state.preview.box : f.box;
    strokeBox(ctx, v, box, labelColor(f.label), f.id === state.selected, f.status === "rejected");
    const score = f.origin === "human" || f.score == null ? "(human)" : Number(f.score).toFixed(2);
    label(ctx, v, box, `${f.label} ${score}`, labelColor(f.label));
  }
  if (state.preview && state.preview.id == null && state.preview.box) {
    strokeBox(ctx, v, state.preview.box, "#fff", true, true);
  }
}

function strokeBox(ctx, v, box, color, selected, dashed) {
  const [x0, y0] = v.toScreen(box[0], box[1]);
  const [x1, y1] = v.toScreen(box[2], box[3]);
  ctx.strokeStyle = color;
  ctx.lineWidth = selected ? 3 : 1.5;
  ctx.setLineDash(dashed ? [6, 4] : []);
  ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
  ctx.setLineDash([]);
  if (!selected) return;
  ctx.fillStyle = color;
  for (const [hx, hy] of [[x0, y0], [x1, y0], [x0, y1], [x1, y1]]) ctx.fillRect(hx - 3, hy - 3, 6, 6);
}

function label(ctx, v, box, text, color) {
  const [x0, y0] = v.toScreen(box[0], box[1]);
  ctx.font = "12px system-ui, sans-serif";
  const w = ctx.measureText(text).width + 6;
  ctx.fillStyle = "rgba(0,0,0,0.65)";
  ctx.fillRect(x0, y0 - 16, w, 16);
  ctx.fillStyle = color;
  ctx.fillText(text, x0 + 3, y0 - 4);
}

/** Marks of the first case the page opens (bench/review.py reads them): the case JSON, its
 * image bytes, the drawn image. */
function markFirst(step) {
  if (firstDrawn) return;
  performance.mark(`review:${step}`);
  if (step === "first-image") firstDrawn = true;
}

async function loadImage() {
  const c = state.case;
  if (c.image.dicom) {
    state.pixels = await loadPixels(c.id, state.frame);
    markFirst("image-bytes");
    state.bytes += state.pixels.bytes;
    if (!state.window) state.window = defaultWindow(c.image, state.pixels);
    renderPixels();
    return;
  }
  const png = await loadPng(api.casePath(c.id, `image.png?frame=${state.frame}`));
  markFirst("image-bytes");
  state.bytes += png.bytes;
  view.setImage(png.bitmap, c.image.width, c.image.height);
}

/** Re-apply window/level to the current frame's pixels. */
export function renderPixels() {
  const p = state.pixels;
  if (!imageCanvas || imageCanvas.width !== p.width || imageCanvas.height !== p.height) {
    imageCanvas = new OffscreenCanvas(p.width, p.height);
  }
  const ctx = imageCanvas.getContext("2d");
  // `image.invert` (MONOCHROME1: low values white) when the server says so.
  const invert = Boolean(state.case.image.invert);
  ctx.putImageData(applyWindow(p, state.window.center, state.window.width, invert), 0, 0);
  view.setImage(imageCanvas, p.width, p.height);
  renderWindowLabel(state);
}

/** The current frame's mask of each label the case has masks for. */
async function loadMasks() {
  const c = state.case;
  const frame = state.frame;
  const loaded = await Promise.all(currentMasks(c).map((m) =>
    Mask.load(c.id, m.label, c.image.width, c.image.height, labelColor(m.label), frame)));
  if (state.case !== c || state.frame !== frame) return;  // moved on while loading
  state.masks = new Map();
  for (const mask of loaded) state.masks.set(mask.label, mask);
  state.maskLabel = state.maskLabel ?? c.masks[0]?.label ?? c.labels?.[0] ?? null;
}

/** Load the selected finding's heat map (once per finding) when the overlay is on. */
export async function ensureHeatmap() {
  const f = state.case.findings.find((x) => x.id === state.selected);
  if (!state.heatmap || !f?.has_heatmap || state.heatmaps.has(f.id)) return;
  const { width, height } = state.case.image;
  state.heatmaps.set(f.id, await loadHeatmap(state.case.id, f.id, width, height));
}

async function ohifLink(c) {
  if (!c.image.dicom || !c.image.study_uid) return "";
  if (ohifAvailable === null) {
    const probe = await fetch("/review/ohif/app-config.js", { method: "HEAD" }).catch(() => null);
    ohifAvailable = Boolean(probe?.ok);
  }
  const uid = encodeURIComponent(c.image.study_uid);
  return ohifAvailable ? `/review/ohif/viewer?StudyInstanceUIDs=${uid}` : "";
}

function derive() {
  const c = state.case;
  const closed = ["accepted", "corrected", "rejected"].includes(c.status);
  state.canReopen = closed;
  const here = frameFindings();
  if (!here.some((f) => f.id === state.selected)) state.selected = here[0]?.id ?? null;
}

/** Redraw the panel (after any state change that it shows). */
export function refreshPanel() {
  derive();
  renderPanel(document.getElementById("panel"), state);
}

/** Open case `id`: the image first (time to first image), then masks and overlays. */
export async function showCase(id) {
  const c = await api.getCase(id);
  markFirst("case");
  Object.assign(state, {
    case: c, frame: 0, window: null, pixels: null, selected: null, preview: null,
    hiddenBoxes: new Set(), hiddenMasks: new Set(), heatmaps: new Map(), masks: new Map(),
    maskLabel: null, maskDirty: false, mode: "view", audit: null, bytes: 0,
  });
  setMode("view");
  refreshPanel();
  await loadImage();
  drawNow();
  markFirst("first-image");
  await loadMasks();
  state.ohifUrl = await ohifLink(c);
  await ensureHeatmap();
  refreshPanel();
  redraw();
  document.getElementById("view-canvas").focus();
}

/** Replace the case with the server's answer to an action; keep the view. */
export async function updateCase(c) {
  const masksChanged = JSON.stringify(c.masks) !== JSON.stringify(state.case.masks);
  state.case = c;
  state.preview = null;
  if (masksChanged && !state.maskDirty) await loadMasks();
  if (state.audit) state.audit = await api.audit(c.id);
  refreshPanel();
  redraw();
}

/** Show another frame of a multi-frame image. */
export async function setFrame(frame) {
  const frames = state.case.image.frames || 1;
  const next = Math.max(0, Math.min(frames - 1, frame));
  if (next === state.frame) return;
  if (state.maskDirty && hooks.saveMask) await hooks.saveMask();  // painted on this frame
  state.frame = next;
  derive();
  renderFindings(state);
  await ensureHeatmap();
  await loadImage();
  if (state.case.masks.length) await loadMasks();
  const slider = document.getElementById("frame-slider");
  if (slider) slider.value = String(next + 1);
  const label = document.getElementById("frame-label");
  if (label) label.textContent = `${next + 1} / ${frames}`;
  redraw();
}

/** Set window/level (DICOM only) and redraw. */
export function setWindow(w) {
  if (!state.pixels) return;
  state.window = { center: w.center, width: Math.max(1, w.width) };
  renderPixels();
  redraw();
}

/** Switch between view, add (draw a box), paint and erase. */
export function setMode(mode) {
  state.mode = mode;
  const badge = document.getElementById("mode-badge");
  const names = { add: "Draw a box", paint: "Paint", erase: "Erase" };
  badge.hidden = mode === "view";
  badge.textContent = names[mode] ? `${names[mode]} · Esc to stop` : "";
}

export function setOpacity(value) {
  state.opacity = value;
  localStorage.setItem(OPACITY, String(value));
  redraw();
}

/** The View (pan and zoom); made once for the page's canvas. */
export function getView() {
  return view;
}

/** Make the View and wire pointer input; `host` adds the edit callbacks from review.js. */
export function initViewer(host) {
  hooks = host;
  const canvas = document.getElementById("view-canvas");
  view = new View(canvas);
  window.addEventListener("resize", redraw);
  attachPointer(canvas, {
    view,
    mode: () => state.mode,
    boxes: () => selectedFirst(),
    getWindow: () => state.window || { center: 128, width: 256 },
    setWindow,
    stepFrame: (d) => setFrame(state.frame + d),
    redraw,
    ...host,
  });
}

function selectedFirst() {
  if (!state.showBoxes) return [];
  const shown = frameFindings().filter((f) => f.box && !state.hiddenBoxes.has(f.id));
  shown.sort((a, b) => (b.id === state.selected) - (a.id === state.selected));
  return shown.map((f) => ({ id: f.id, box: f.box }));
}
