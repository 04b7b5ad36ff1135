// The view on the canvas: image <-> screen transform, pan and zoom that persist from case to
// case (localStorage, relative to the fitted size and the image centre), and drawing.

const STORE = "review.view";
const MIN_REL = 0.05;
const MAX_REL = 64;

/** The colour of a label, the same for a label everywhere on the page. */
export function labelColor(label) {
  let hash = 0;
  for (const ch of String(label)) hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
  return `hsl(${hash % 360} 85% 58%)`;
}

export class View {
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.image = null; // ImageBitmap | HTMLCanvasElement | OffscreenCanvas
    this.width = 0;
    this.height = 0;
    this.rel = 1; // zoom relative to "fit"
    this.cx = 0.5; // view centre, as a fraction of the image size
    this.cy = 0.5;
    this.restore();
  }

  restore() {
    try {
      const saved = JSON.parse(localStorage.getItem(STORE) || "null");
      if (saved && Number.isFinite(saved.rel)) Object.assign(this, pick(saved));
    } catch {
      localStorage.removeItem(STORE);
    }
  }

  persist() {
    localStorage.setItem(STORE, JSON.stringify({ rel: this.rel, cx: this.cx, cy: this.cy }));
  }

  /** Back to the whole image fitted in the canvas. */
  reset() {
    this.rel = 1;
    this.cx = 0.5;
    this.cy = 0.5;
    this.persist();
  }

  setImage(image, width, height) {
    this.image = image;
    this.width = width;
    this.height = height;
  }

  resize() {
    const dpr = window.devicePixelRatio || 1;
    const rect = this.canvas.getBoundingClientRect();
    const w = Math.max(1, Math.round(rect.width * dpr));
    const h = Math.max(1, Math.round(rect.height * dpr));
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
    }
  }

  /** Screen (CSS px) per image pixel. */
  get scale() {
    const rect = this.canvas.getBoundingClientRect();
    const fit = Math.min(rect.width / (this.width || 1), rect.height / (this.height || 1));
    return fit * this.rel;
  }

  /** The transform: screen = image * scale + (tx, ty), in CSS pixels of the canvas. */
  transform() {
    const rect = this.canvas.getBoundingClientRect();
    const s = this.scale;
    return {
      scale: s,
      tx: rect.width / 2 - this.cx * this.width * s,
      ty: rect.height / 2 - this.cy * this.height * s,
    };
  }

  toImage(clientX, clientY) {
    const rect = this.canvas.getBoundingClientRect();
    const { scale, tx, ty } = this.transform();
    return [(clientX - rect.left - tx) / scale, (clientY - rect.top - ty) / scale];
  }

  toScreen(x, y) {
    const { scale, tx, ty } = this.transform();
    return [x * scale + tx, y * scale + ty];
  }

  panBy(dx, dy) {
    const s = this.scale;
    this.cx -= dx / (s * this.width);
    this.cy -= dy / (s * this.height);
    this.persist();
  }

  /** Zoom by `factor` keeping the image point under the cursor in place. */
  zoomAt(clientX, clientY, factor) {
    const [ix, iy] = this.toImage(clientX, clientY);
    this.rel = Math.min(MAX_REL, Math.max(MIN_REL, this.rel * factor));
    const [sx, sy] = this.toScreen(ix, iy);
    const rect = this.canvas.getBoundingClientRect();
    this.panBy(sx - (clientX - rect.left), sy - (clientY - rect.top));
  }

  /** Draw the image, then `layers` in image space ({image, alpha}), then `paint(ctx, view)`. */
  draw(layers, paint) {
    this.resize();
    const ctx = this.ctx;
    const dpr = window.devicePixelRatio || 1;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    if (!this.image) return;
    const { scale, tx, ty } = this.transform();
    ctx.setTransform(dpr * scale, 0, 0, dpr * scale, dpr * tx, dpr * ty);
    ctx.imageSmoothingEnabled = scale < 1;
    ctx.drawImage(this.image, 0, 0);
    for (const layer of layers) {
      ctx.globalAlpha = layer.alpha;
      ctx.drawImage(layer.image, 0, 0, this.width, this.height);
    }
    ctx.globalAlpha = 1;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    if (paint) paint(ctx, this);
    this.canvas.dataset.view = JSON.stringify({ scale, tx, ty, rel: this.rel });
  }
}

function pick(saved) {
  const clamp = (v, lo, hi, d) => (Number.isFinite(v) ? Math.min(hi, Math.max(lo, v)) : d);
  return {
    rel: clamp(saved.rel, MIN_REL, MAX_REL, 1),
    cx: clamp(saved.cx, -1, 2, 0.5),
    cy: clamp(saved.cy, -1, 2, 0.5),
  };
}
