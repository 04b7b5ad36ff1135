// Raw pixels (GET .../pixels) and window/level in the page, as PS3.3 C.11.2.1.2 (linear VOI).
import { api, fetchBinary } from "./api.js";

const ARRAYS = { uint8: Uint8Array, uint16: Uint16Array, int16: Int16Array };

/** Fetch one frame's raw little-endian pixels: {width, height, channels, dtype, data}. */
export async function loadPixels(caseId, frame) {
  const response = await fetchBinary(api.casePath(caseId, `pixels?frame=${frame}`));
  const dtype = response.headers.get("X-Dtype") || "uint8";
  const Array_ = ARRAYS[dtype];
  if (!Array_) throw new Error(`unsupported pixel type ${dtype}: expected uint8, uint16 or int16`);
  const buffer = await response.arrayBuffer();
  return {
    width: Number(response.headers.get("X-Width")),
    height: Number(response.headers.get("X-Height")),
    channels: Number(response.headers.get("X-Channels") || 1),
    dtype,
    data: littleEndian(buffer, Array_),
    bytes: buffer.byteLength,
  };
}

function littleEndian(buffer, Array_) {
  if (Array_.BYTES_PER_ELEMENT === 1 || new Uint8Array(new Uint16Array([1]).buffer)[0] === 1) {
    return new Array_(buffer);
  }
  const view = new DataView(buffer);
  const out = new Array_(buffer.byteLength / 2);
  const signed = Array_ === Int16Array;
  for (let i = 0; i < out.length; i++) {
    out[i] = signed ? view.getInt16(2 * i, true) : view.getUint16(2 * i, true);
  }
  return out;
}

/** The lowest and highest stored value (for a default window when the source had none). */
export function pixelRange(pixels) {
  let min = Infinity;
  let max = -Infinity;
  const data = pixels.data;
  for (let i = 0; i < data.length; i++) {
    const v = data[i];
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return { min, max };
}

/** The default window: the source's, else the full range of the pixels. */
export function defaultWindow(image, pixels) {
  if (image.window) return { ...image.window };
  const { min, max } = pixelRange(pixels);
  return { center: (min + max) / 2, width: Math.max(1, max - min + 1) };
}

function lookupTable(dtype, center, width, invert) {
  const offset = dtype === "int16" ? 32768 : 0;
  const size = dtype === "uint8" ? 256 : 65536;
  const lut = new Uint8ClampedArray(size);
  const w = Math.max(1, width);
  const low = center - 0.5 - (w - 1) / 2;
  const high = center - 0.5 + (w - 1) / 2;
  for (let i = 0; i < size; i++) {
    const x = i - offset;
    if (x <= low) lut[i] = 0;
    else if (x > high) lut[i] = 255;
    else lut[i] = ((x - (center - 0.5)) / (w - 1 || 1) + 0.5) * 255;
    if (invert) lut[i] = 255 - lut[i];
  }
  return { lut, offset };
}

/** Apply window/level (inverted for MONOCHROME1 when `invert`): an RGBA ImageData. */
export function applyWindow(pixels, center, width, invert = false, target = null) {
  const { width: w, height: h, channels, data } = pixels;
  const out = target && target.width === w && target.height === h ? target : new ImageData(w, h);
  const rgba = out.data;
  const { lut, offset } = lookupTable(pixels.dtype, center, width, invert);
  const n = w * h;
  if (channels === 1) {
    for (let i = 0, j = 0; i < n; i++, j += 4) {
      const v = lut[data[i] + offset];
      rgba[j] = v;
      rgba[j + 1] = v;
      rgba[j + 2] = v;
      rgba[j + 3] = 255;
    }
  } else {
    for (let i = 0, j = 0, k = 0; i < n; i++, j += 4, k += channels) {
      rgba[j] = lut[data[k] + offset];
      rgba[j + 1] = lut[data[k + 1] + offset];
      rgba[j + 2] = lut[data[k + 2] + offset];
      rgba[j + 3] = 255;
    }
  }
  return out;
}

/** An 8-bit rendering (GET .../image.png) as an ImageBitmap, for sources that are not DICOM. */
export async function loadPng(path) {
  const response = await fetchBinary(path);
  const blob = await response.blob();
  return { bitmap: await createImageBitmap(blob), bytes: blob.size };
}
