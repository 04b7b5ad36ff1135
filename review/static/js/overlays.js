// Masks (0/255 PNGs, editable) and Grad-CAM heat maps (8-bit grey PNGs, coloured here).
import { api, ApiError, fetchBinary } from "./api.js";

/** One entry per mask label: the current mask is the human one when there is one. */
export function currentMasks(c) {
  const byLabel = new Map();
  for (const m of c.masks) {
    if (!byLabel.has(m.label) || m.origin === "human") byLabel.set(m.label, m);
  }
  return [...byLabel.values()];
}

async function greyPixels(path, width, height) {
  const response = await fetchBinary(path);
  const bitmap = await createImageBitmap(await response.blob());
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0, width, height);
  const rgba = ctx.getImageData(0, 0, width, height).data;
  const grey = new Uint8Array(width * height);
  for (let i = 0; i < grey.length; i++) grey[i] = rgba[4 * i];
  return grey;
}

function parseColor(css) {
  const probe = new OffscreenCanvas(1, 1).getContext("2d");
  probe.fillStyle = css;
  probe.fillRect(0, 0, 1, 1);
  return probe.getImageData(0, 0, 1, 1).data;
}

/** One label's mask on one frame: the 0/1 values, and an RGBA canvas of them in its colour. */
export class Mask {
  constructor(label, width, height, values, color, frame = 0) {
    this.label = label;
    this.frame = frame;
    this.width = width;
    this.height = height;
    this.values = values;
    this.rgb = parseColor(color);
    this.canvas = new OffscreenCanvas(width, height);
    this.ctx = this.canvas.getContext("2d");
    this.dirty = false;
    this.refresh(0, 0, width, height);
  }

  /** The label's mask on `frame`; an empty one when that frame has none (404). */
  static async load(caseId, label, width, height, color, frame = 0) {
    const name = `masks/${encodeURIComponent(label)}.png?frame=${frame}`;
    let grey;
    try {
      grey = await greyPixels(api.casePath(caseId, name), width, height);
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 404)) throw error;
      grey = new Uint8Array(width * height);
    }
    for (let i = 0; i < grey.length; i++) grey[i] = grey[i] > 127 ? 1 : 0;
    return new Mask(label, width, height, grey, color, frame);
  }

  refresh(x0, y0, x1, y1) {
    const w = x1 - x0;
    const h = y1 - y0;
    if (w <= 0 || h <= 0) return;
    const img = this.ctx.createImageData(w, h);
    const [r, g, b] = this.rgb;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const on = this.values[(y + y0) * this.width + x + x0];
        const j = 4 * (y * w + x);
        img.data[j] = r;
        img.data[j + 1] = g;
        img.data[j + 2] = b;
        img.data[j + 3] = on ? 255 : 0;
      }
    }
    this.ctx.putImageData(img, x0, y0);
  }

  /** Paint (value 1) or erase (0) a disc of `radius` image pixels at (cx, cy). */
  brush(cx, cy, radius, value) {
    const x0 = Math.max(0, Math.floor(cx - radius));
    const y0 = Math.max(0, Math.floor(cy - radius));
    const x1 = Math.min(this.width, Math.ceil(cx + radius) + 1);
    const y1 = Math.min(this.height, Math.ceil(cy + radius) + 1);
    const r2 = radius * radius;
    for (let y = y0; y < y1; y++) {
      for (let x = x0; x < x1; x++) {
        if ((x - cx) ** 2 + (y - cy) ** 2 <= r2) this.values[y * this.width + x] = value;
      }
    }
    this.dirty = true;
    this.refresh(x0, y0, x1, y1);
  }

  /** The mask as a 0/255 greyscale-looking opaque PNG, base64 without the data: prefix. */
  async pngBase64() {
    const canvas = new OffscreenCanvas(this.width, this.height);
    const ctx = canvas.getContext("2d");
    const img = ctx.createImageData(this.width, this.height);
    for (let i = 0; i < this.values.length; i++) {
      const v = this.values[i] ? 255 : 0;
      const j = 4 * i;
      img.data[j] = v;
      img.data[j + 1] = v;
      img.data[j + 2] = v;
      img.data[j + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    const blob = await canvas.convertToBlob({ type: "image/png" });
    const bytes = new Uint8Array(await blob.arrayBuffer());
    let binary = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    }
    return btoa(binary);
  }
}

// A perceptual "turbo"-like ramp, sampled at 6 stops and interpolated (blue -> red).
const STOPS = [
  [48, 18, 59], [70, 130, 248], [27, 229, 181], [164, 252, 60], [251, 185, 56], [122, 4, 3],
];

function ramp(v) {
  const t = (v / 255) * (STOPS.length - 1);
  const i = Math.min(STOPS.length - 2, Math.floor(t));
  const f = t - i;
  return STOPS[i].map((a, k) => a + (STOPS[i + 1][k] - a) * f);
}

/** A finding's heat map as a coloured canvas at image size. */
export async function loadHeatmap(caseId, findingId, width, height) {
  const path = api.casePath(caseId, `findings/${encodeURIComponent(findingId)}/heatmap.png`);
  const grey = await greyPixels(path, width, height);
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(width, height);
  const table = Array.from({ length: 256 }, (_, v) => ramp(v));
  for (let i = 0; i < grey.length; i++) {
    const rgb = table[grey[i]];
    const j = 4 * i;
    img.data[j] = rgb[0];
    img.data[j + 1] = rgb[1];
    img.data[j + 2] = rgb[2];
    img.data[j + 3] = 40 + (215 * grey[i]) / 255; // cold areas stay see-through
  }
  ctx.putImageData(img, 0, 0);
  return canvas;
}
