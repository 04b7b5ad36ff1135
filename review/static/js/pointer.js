// Pointer input on the canvas: pan (left drag), zoom (wheel), window/level (right drag),
// frames (shift + wheel), and in the edit modes: move / resize a box by its body or edges,
// draw a new box, paint or erase a mask.

const EDGE_PX = 7;

/** Which part of `box` is under screen point (sx, sy): edges "l r t b" / "move" / null. */
export function hitBox(view, box, sx, sy) {
  const [x0, y0] = view.toScreen(box[0], box[1]);
  const [x1, y1] = view.toScreen(box[2], box[3]);
  const inX = sx > x0 - EDGE_PX && sx < x1 + EDGE_PX;
  const inY = sy > y0 - EDGE_PX && sy < y1 + EDGE_PX;
  if (!inX || !inY) return null;
  let edges = "";
  if (Math.abs(sx - x0) <= EDGE_PX) edges += "l";
  if (Math.abs(sx - x1) <= EDGE_PX) edges += "r";
  if (Math.abs(sy - y0) <= EDGE_PX) edges += "t";
  if (Math.abs(sy - y1) <= EDGE_PX) edges += "b";
  if (edges) return edges;
  return sx > x0 && sx < x1 && sy > y0 && sy < y1 ? "move" : null;
}

function dragBox(box, part, dx, dy) {
  const out = [...box];
  if (part === "move") return [box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy];
  if (part.includes("l")) out[0] = Math.min(box[0] + dx, box[2] - 1);
  if (part.includes("r")) out[2] = Math.max(box[2] + dx, box[0] + 1);
  if (part.includes("t")) out[1] = Math.min(box[1] + dy, box[3] - 1);
  if (part.includes("b")) out[3] = Math.max(box[3] + dy, box[1] + 1);
  return out;
}

function clampBox(box, width, height) {
  const r = (v, hi) => Math.round(Math.min(hi, Math.max(0, v)));
  return [r(box[0], width), r(box[1], height), r(box[2], width), r(box[3], height)];
}

const CURSORS = { move: "move", l: "ew-resize", r: "ew-resize", t: "ns-resize", b: "ns-resize",
  lt: "nwse-resize", rb: "nwse-resize", rt: "nesw-resize", lb: "nesw-resize" };

/**
 * Wire the canvas. `host` supplies: view, mode(), boxes() -> [{id, box}] (hit order),
 * select(id), redraw(), window/level get/set, frame step, and the edit callbacks
 * boxChanged(id, box), boxDrawn(box), brush(x, y, erase), brushDone().
 */
export function attachPointer(canvas, host) {
  let drag = null;
  const local = (e) => {
    const rect = canvas.getBoundingClientRect();
    return [e.clientX - rect.left, e.clientY - rect.top];
  };
  canvas.addEventListener("contextmenu", (e) => e.preventDefault());
  canvas.addEventListener("pointerdown", (e) => {
    canvas.focus();
    canvas.setPointerCapture(e.pointerId);
    drag = startDrag(e, host, local(e));
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!drag) {
      hover(canvas, host, local(e));
      return;
    }
    moveDrag(drag, e, host);
  });
  const end = (e) => {
    if (!drag) return;
    endDrag(drag, host);
    drag = null;
    if (canvas.hasPointerCapture(e.pointerId)) canvas.releasePointerCapture(e.pointerId);
  };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    if (e.shiftKey) host.stepFrame(e.deltaY > 0 ? 1 : -1);
    else host.view.zoomAt(e.clientX, e.clientY, Math.exp(-e.deltaY * 0.0015));
    host.redraw();
  }, { passive: false });
}

function startDrag(e, host, [sx, sy]) {
  const start = { x: e.clientX, y: e.clientY, sx, sy, image: host.view.toImage(e.clientX, e.clientY) };
  if (e.button === 2) return { ...start, kind: "window", window: { ...host.getWindow() } };
  const mode = host.mode();
  if (mode === "add") return { ...start, kind: "draw", box: null };
  if (mode === "paint" || mode === "erase") {
    host.brush(...start.image, mode === "erase");
    return { ...start, kind: "brush", erase: mode === "erase" };
  }
  for (const { id, box } of host.boxes()) {
    const part = hitBox(host.view, box, sx, sy);
    if (part) {
      host.select(id);
      return { ...start, kind: "box", id, part, box0: box, box };
    }
  }
  return { ...start, kind: "pan", last: [e.clientX, e.clientY] };
}

function moveDrag(drag, e, host) {
  const view = host.view;
  if (drag.kind === "pan") {
    view.panBy(e.clientX - drag.last[0], e.clientY - drag.last[1]);
    drag.last = [e.clientX, e.clientY];
  } else if (drag.kind === "window") {
    const w = drag.window;
    const k = Math.max(1, w.width / 256);
    host.setWindow({
      center: w.center - (e.clientY - drag.y) * k,
      width: Math.max(1, w.width + (e.clientX - drag.x) * k),
    });
  } else if (drag.kind === "box") {
    const [ix, iy] = view.toImage(e.clientX, e.clientY);
    const moved = dragBox(drag.box0, drag.part, ix - drag.image[0], iy - drag.image[1]);
    drag.box = clampBox(moved, view.width, view.height);
    host.previewBox(drag.id, drag.box);
  } else if (drag.kind === "draw") {
    const [ix, iy] = view.toImage(e.clientX, e.clientY);
    const [ax, ay] = drag.image;
    const box = [Math.min(ax, ix), Math.min(ay, iy), Math.max(ax, ix), Math.max(ay, iy)];
    drag.box = clampBox(box, view.width, view.height);
    host.previewBox(null, drag.box);
  } else if (drag.kind === "brush") {
    host.brush(...view.toImage(e.clientX, e.clientY), drag.erase);
  }
  host.redraw();
}

function endDrag(drag, host) {
  if (drag.kind === "box" && drag.box !== drag.box0) host.boxChanged(drag.id, drag.box);
  else if (drag.kind === "draw" && drag.box && drag.box[2] - drag.box[0] >= 2) {
    host.boxDrawn(drag.box);
  } else if (drag.kind === "brush") host.brushDone();
  else if (drag.kind === "draw") host.previewBox(null, null);
  host.redraw();
}

function hover(canvas, host, [sx, sy]) {
  const mode = host.mode();
  if (mode !== "view") {
    canvas.style.cursor = "crosshair";
    return;
  }
  for (const { box } of host.boxes()) {
    const part = hitBox(host.view, box, sx, sy);
    if (part) {
      canvas.style.cursor = CURSORS[part] || "move";
      return;
    }
  }
  canvas.style.cursor = "grab";
}
