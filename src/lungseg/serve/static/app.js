// lungseg viewer: upload, show original and segmentation, opacity/mode/slice controls.
"use strict";

// label -> [r, g, b] of the lung and infection masks, from the server's one table
// (GET /api/v1/colours, lungseg.visualize.colour_table), as every output draws them
let COLOURS = {};
let INFECTION = {};
let coloursLoaded = null;  // the fetch of the table, awaited before the first drawing
const VOLUME = /\.(nii|nii\.gz|zip)$/i;
const $ = (id) => document.getElementById(id);
let frames = [];      // array order (feet first): [{image, mediastinal, mask, infection, width, height}]
let result = null;

const SWATCHES = { lung: { 1: "--right", 2: "--left" }, infection: { 1: "--ggo", 2: "--consolidation", 3: "--effusion" } };

async function loadColours() {
  const table = await (await fetch("/api/v1/colours")).json();
  const rgb = (mask) => Object.fromEntries(Object.entries(table[mask]).map(([k, v]) => [Number(k), v.rgb]));
  COLOURS = rgb("lung");
  INFECTION = rgb("infection");
  for (const [mask, names] of Object.entries(SWATCHES)) {  // the legend's swatches too
    for (const [label, name] of Object.entries(names)) {
      const colour = rgb(mask)[label];
      if (colour) document.documentElement.style.setProperty(name, `rgb(${colour.join(", ")})`);
    }
  }
}

async function loadModel() {
  try {
    const card = await (await fetch("/api/v1/model")).json();
    const created = card.created ? `, trained ${card.created.slice(0, 10)}` : "";
    $("model").textContent = `Model: ${card.name || "unknown"}${created}`;
  } catch (err) {
    $("model").textContent = "Model information unavailable";
  }
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function decodePng(b64) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => {
      const canvas = document.createElement("canvas");
      canvas.width = img.width; canvas.height = img.height;
      const ctx = canvas.getContext("2d");
      ctx.drawImage(img, 0, 0);
      resolve(ctx.getImageData(0, 0, img.width, img.height));
    };
    img.onerror = () => reject(new Error("the server sent an unreadable picture"));
    img.src = "data:image/png;base64," + b64;
  });
}

// Masks come as palette PNGs: the pixel values are the labels (the palette only shows
// them in colour). They are read as stored, from the PNG's own bytes: its image data
// inflated and each row's filter undone (8 bits a pixel, grey or palette).
async function labelsOf(b64) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const view = new DataView(bytes.buffer);
  let width = 0, height = 0, depth = 0, type = -1;
  const data = [];
  for (let at = 8; at + 8 <= bytes.length; ) {
    const length = view.getUint32(at);
    const kind = String.fromCharCode(...bytes.subarray(at + 4, at + 8));
    if (kind === "IHDR") {
      width = view.getUint32(at + 8); height = view.getUint32(at + 12);
      depth = bytes[at + 16]; type = bytes[at + 17];
    } else if (kind === "IDAT") data.push(bytes.subarray(at + 8, at + 8 + length));
    at += 12 + length;
  }
  if (depth !== 8 || (type !== 0 && type !== 3)) throw new Error("the server sent a mask this page cannot read");
  const inflated = new Blob(data).stream().pipeThrough(new DecompressionStream("deflate"));
  const raw = new Uint8Array(await new Response(inflated).arrayBuffer());
  const labels = new Uint8Array(width * height);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (width + 1)], row = y * width;
    for (let x = 0; x < width; x++) {
      const a = x ? labels[row + x - 1] : 0, b = y ? labels[row - width + x] : 0;
      const c = x && y ? labels[row - width + x - 1] : 0;
      let v = raw[y * (width + 1) + 1 + x];
      if (filter === 1) v += a;
      else if (filter === 2) v += b;
      else if (filter === 3) v += (a + b) >> 1;
      else if (filter === 4) {
        const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
        v += pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      labels[row + x] = v & 255;
    }
  }
  return labels;
}

async function toFrame(data) {
  coloursLoaded = coloursLoaded || loadColours();
  await coloursLoaded;
  const image = await decodePng(data.image_png);
  const mediastinal = data.mediastinal_png ? await decodePng(data.mediastinal_png) : null;
  const mask = await labelsOf(data.mask_png);
  const infection = data.infection_png ? await labelsOf(data.infection_png) : null;
  return { image, mediastinal, mask, infection, width: image.width, height: image.height };
}

// The slider runs head to feet, as viewers number slices; frames run feet to head.
const frameIndex = () => frames.length - 1 - (Number($("slice").value) || 0);

function blend(out, i, colour, a) {
  for (let c = 0; c < 3; c++) out.data[i * 4 + c] = (1 - a) * out.data[i * 4 + c] + a * colour[c];
}

function draw() {
  if (!frames.length) return;
  const index = Math.max(0, frameIndex());
  const frame = frames[Math.min(index, frames.length - 1)];
  const mediastinal = document.querySelector("input[name=window]:checked").value === "mediastinal";
  const image = mediastinal && frame.mediastinal ? frame.mediastinal : frame.image;
  const alpha = Number($("opacity").value) / 100;
  const mode = document.querySelector("input[name=mode]:checked").value;
  for (const id of ["original", "overlay"]) {
    $(id).width = frame.width; $(id).height = frame.height;
  }
  $("original").getContext("2d").putImageData(image, 0, 0);
  const out = new ImageData(new Uint8ClampedArray(image.data), frame.width, frame.height);
  if (mode !== "off") {
    const w = frame.width, h = frame.height, m = frame.mask;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const i = y * w + x, label = m[i];
        const colour = COLOURS[label];
        if (!colour) continue;
        const edge = x === 0 || y === 0 || x === w - 1 || y === h - 1 ||
          m[i - 1] !== label || m[i + 1] !== label || m[i - w] !== label || m[i + w] !== label;
        const a = mode === "outline" ? (edge ? 1 : 0) : (edge ? Math.max(alpha, 0.85) : alpha);
        if (a === 0) continue;
        blend(out, i, colour, a);
      }
    }
  }
  if (frame.infection && $("infection").checked) {
    for (let i = 0; i < frame.infection.length; i++) {
      const colour = INFECTION[frame.infection[i]];
      if (colour) blend(out, i, colour, Math.max(alpha, 0.35));
    }
  }
  $("overlay").getContext("2d").putImageData(out, 0, 0);
  const edges = sideEdges(frame);
  for (const id of ["original", "overlay"]) markSides($(id).getContext("2d"), frame, edges);
  $("slice-number").textContent = frames.length > 1 ? sliceLabel(index) : "";
  const perSlice = result && result.involvement && result.involvement.per_slice;
  if (perSlice && perSlice[index]) {
    const s = perSlice[index], pct = (v) => `${(100 * v).toFixed(1)} %`;
    $("slice-number").textContent += ` · involved here: right ${pct(s.right)}, left ${pct(s.left)}`;
  }
}

// R and L at the image's edges, as viewers mark them: a scan comes in the radiological
// view (the patient's right on the left); a photo, which may be turned or mirrored, has
// its sides where the patient's right and left lung lie, along the axis they lie on.
function sideEdges(frame) {
  const upright = { R: "left", L: "right" };
  if (!result || result.kind === "volume") return upright;
  if (!frame.edges) frame.edges = findEdges(frame, upright);  // once per picture, not per draw
  return frame.edges;
}

function findEdges(frame, upright) {
  const centre = (label) => {
    let n = 0, sx = 0, sy = 0;
    for (let i = 0; i < frame.mask.length; i++) {
      if (frame.mask[i] === label) { n++; sx += i % frame.width; sy += Math.floor(i / frame.width); }
    }
    return n ? [sx / n, sy / n] : null;
  };
  const right = centre(1), left = centre(2);
  if (!right || !left) return upright;
  const dx = left[0] - right[0], dy = left[1] - right[1];
  if (Math.abs(dx) >= Math.abs(dy)) return dx > 0 ? upright : { R: "right", L: "left" };
  return dy > 0 ? { R: "top", L: "bottom" } : { R: "bottom", L: "top" };
}

function markSides(ctx, frame, edges) {
  const size = Math.max(10, Math.round(Math.min(frame.width, frame.height) / 18));
  const at = {
    left: [size * 0.8, frame.height / 2], right: [frame.width - size * 0.8, frame.height / 2],
    top: [frame.width / 2, size * 0.8], bottom: [frame.width / 2, frame.height - size * 0.8],
  };
  ctx.font = `bold ${size}px sans-serif`;
  ctx.textAlign = "center"; ctx.textBaseline = "middle";
  ctx.lineWidth = Math.max(2, size / 6); ctx.strokeStyle = "black"; ctx.fillStyle = "white";
  for (const [letter, edge] of Object.entries(edges)) {
    const [x, y] = at[edge];
    ctx.strokeText(letter, x, y);
    ctx.fillText(letter, x, y);
  }
}

function sliceLabel(index) {
  // "12 / 64 · instance 53 · z -120.5 mm": numbered head to feet, with the file's own numbers
  const place = result && result.lung.per_slice && result.lung.per_slice[index];
  const parts = [`${frames.length - index} / ${frames.length}`];
  if (place && place.instance !== null) parts.push(`instance ${place.instance}`);
  if (place && place.z_mm !== null) parts.push(`z ${place.z_mm.toFixed(1)} mm`);
  if (place) parts.push(sliceArea(place));
  return parts.join(" · ");
}

function sliceArea(place) {
  // the lung area of the slice on screen: cm² where the scan has voxel sizes, else pixels
  if (result.lung.unit === "px") {
    return `lungs ${Math.round(place.total)} px (right ${Math.round(place.right)}, left ${Math.round(place.left)})`;
  }
  const cm2 = (mm2) => (mm2 / 100).toFixed(1);
  return `lungs ${cm2(place.total)} cm² (right ${cm2(place.right)}, left ${cm2(place.left)})`;
}

function applyZoom() {
  const zoom = Number($("zoom").value) || 1;
  for (const id of ["original", "overlay"]) $(id).style.width = `${100 * zoom}%`;
}

// The answer's check: a banner with the reasons to look before using it (review).
function showCheck(check) {
  const banner = $("check");
  const doubtful = check && check.status !== "ok";
  banner.hidden = !doubtful;
  if (!doubtful) return banner.replaceChildren();
  const head = document.createElement("strong");
  head.textContent = check.status === "review" ? "Review this answer before using it:" : "Refused:";
  const list = document.createElement("ul");
  list.replaceChildren(...check.reasons.map((reason) => {
    const item = document.createElement("li");
    item.textContent = reason;
    return item;
  }));
  banner.replaceChildren(head, list);
}

function showMeasures(data) {
  const lung = data.lung;
  const unit = lung.unit === "mm2" ? "mm²" : lung.unit === "px" ? "pixels" : "mL";
  const fmt = (v) => `${Number(v).toLocaleString(undefined, { maximumFractionDigits: 1 })} ${unit}`;
  $("right").textContent = fmt(lung.right);
  $("left").textContent = fmt(lung.left);
  $("total").textContent = fmt(lung.total);
  $("time").textContent = `${data.timings_ms.total} ms`;
  showCheck(data.check);
  $("notes").replaceChildren(...(data.notes || []).map((note) => {
    const item = document.createElement("li");
    item.textContent = note; // how the file was read: series chosen, values guessed, sides...
    return item;
  }));
  const inv = data.involvement;
  for (const id of ["findings-head", "findings-note", "involvement-row", "severity-row", "infection-control", "infection-legend"]) $(id).hidden = !inv;
  $("involved-ml-row").hidden = !(inv && inv.involved_ml);
  $("zones-row").hidden = !(inv && inv.zones);
  if (inv) {
    const pct = (v) => `${(100 * v).toFixed(1)} %`;
    $("involvement").textContent = `right ${pct(inv.share.right)}, left ${pct(inv.share.left)}, both ${pct(inv.share.total)}`;
    $("severity").textContent = `right ${inv.severity.right}, left ${inv.severity.left}, total ${inv.severity.total} / 10`;
    $("findings-note").textContent = inv.trained_on; // what the findings come from, and are not
    if (inv.involved_ml) {
      const ml = inv.involved_ml;
      $("involved-ml").textContent = `right ${ml.right.toFixed(1)} mL, left ${ml.left.toFixed(1)} mL, both ${ml.total.toFixed(1)} mL`;
    }
    if (inv.zones) {
      const third = (z) => [z.upper, z.middle, z.lower].map(pct).join(" / ");
      $("zones").textContent = `right ${third(inv.zones.right)}; left ${third(inv.zones.left)}`;
    }
  }
}

let busy = false;

// POST with the upload's progress: "Uploading … 42 %", then "Segmenting … 3 s" until the answer.
function post(url, body, name) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    let timer = null;
    const segmenting = () => {
      const began = Date.now();
      const show = () => {
        $("status").textContent = `Segmenting ${name}… ${Math.round((Date.now() - began) / 1000)} s`;
      };
      show();
      timer = setInterval(show, 1000);
    };
    request.upload.onprogress = (event) => {
      if (event.lengthComputable) {
        $("status").textContent = `Uploading ${name}… ${Math.floor((100 * event.loaded) / event.total)} %`;
      }
    };
    request.upload.onload = segmenting;
    request.onload = () => {
      clearInterval(timer);
      let data = {};
      try {
        data = JSON.parse(request.responseText);
      } catch {
        data = { error: `the server answered ${request.status} without JSON` };
      }
      resolve({ ok: request.status >= 200 && request.status < 300, status: request.status, data });
    };
    request.onerror = () => {
      clearInterval(timer);
      reject(new Error("the server could not be reached"));
    };
    request.open("POST", url);
    request.send(body);
  });
}

async function upload(file) {
  if (busy) return; // one at a time: the input is disabled meanwhile
  busy = true;
  $("file").disabled = true;
  showError("");
  $("result").hidden = true; // never the previous file's result beside this one's name
  $("status").textContent = `Uploading ${file.name}… 0 %`;
  const volume = VOLUME.test(file.name);
  const body = new FormData();
  body.append("file", file);
  try {
    const response = await post(volume ? "/api/v1/segment-volume" : "/api/v1/segment", body, file.name);
    const data = response.data;
    if (!response.ok) throw new Error(data.error || `the server answered ${response.status}`);
    result = data;
    if (volume) {
      frames = await Promise.all(data.slices.map(toFrame));
      $("download-mask").href = "data:application/gzip;base64," + data.mask_nifti;
      $("download-mask").download = file.name.replace(VOLUME, "") + "_mask.nii.gz";
      $("download-overlay").hidden = true;
    } else {
      frames = [await toFrame(data)];
      const stem = file.name.replace(/\.[^.]+$/, "");
      $("download-mask").href = "data:image/png;base64," + data.mask_png;
      $("download-mask").download = stem + "_mask.png";
      $("download-overlay").href = "data:image/png;base64," + data.overlay_png;
      $("download-overlay").download = stem + "_overlay.png";
      $("download-overlay").hidden = false;
    }
    const stem = file.name.replace(VOLUME, "").replace(/\.[^.]+$/, "");
    $("download-infection").hidden = !data.infection_png;
    if (data.infection_png) {
      $("download-infection").href = "data:image/png;base64," + data.infection_png;
      $("download-infection").download = stem + "_infection.png";
    }
    // the numbers without the pictures: what a spreadsheet or a report needs
    const numbers = Object.fromEntries(Object.entries(data).filter(([key]) => !/_png$|_nifti$|^slices$/.test(key)));
    const blob = new Blob([JSON.stringify(numbers, null, 2)], { type: "application/json" });
    if ($("download-numbers").href.startsWith("blob:")) URL.revokeObjectURL($("download-numbers").href);
    $("download-numbers").href = URL.createObjectURL(blob);
    $("download-numbers").download = stem + "_numbers.json";
    $("slice").max = String(frames.length - 1);
    $("slice").value = String(Math.floor(frames.length / 2));
    $("slice-control").hidden = frames.length < 2;
    $("window-control").hidden = !frames[0].mediastinal; // 8-bit pictures: already windowed
    $("result").hidden = false;
    showMeasures(data);
    draw();
    $("status").textContent = `${file.name}: ${data.size.join(" × ")} ${data.kind}, done.`;
  } catch (err) {
    $("status").textContent = "";
    // the server's messages name the file already; others get its name once
    showError(err.message.startsWith(file.name) ? err.message : `${file.name}: ${err.message}`);
  } finally {
    busy = false;
    $("file").disabled = false;
  }
}

function init() {
  const drop = $("drop"), input = $("file");
  input.addEventListener("change", () => input.files.length && upload(input.files[0]));
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault(); drop.classList.remove("over");
    if (e.dataTransfer.files.length) upload(e.dataTransfer.files[0]);
  });
  for (const id of ["opacity", "slice"]) $(id).addEventListener("input", draw);
  // move through a scan as in a PACS viewer: the wheel (down: towards the feet), PageUp
  // (towards the head) and PageDown
  const step = (by) => {
    if (frames.length < 2) return false;
    const slice = $("slice");
    slice.value = String(Math.min(frames.length - 1, Math.max(0, Number(slice.value) + by)));
    draw();
    return true;
  };
  for (const id of ["original", "overlay"]) {
    $(id).addEventListener("wheel", (e) => { if (step(Math.sign(e.deltaY))) e.preventDefault(); }, { passive: false });
  }
  document.addEventListener("keydown", (e) => {
    const by = { PageUp: -1, PageDown: 1 }[e.key];
    if (by && step(by)) e.preventDefault();
  });
  $("infection").addEventListener("change", draw);
  for (const radio of document.querySelectorAll("input[name=mode], input[name=window]")) {
    radio.addEventListener("change", draw);
  }
  $("zoom").addEventListener("change", applyZoom);
  // zoomed in, the two pictures scroll together
  const views = [...document.querySelectorAll(".view")];
  for (const view of views) {
    view.addEventListener("scroll", () => {
      for (const other of views) {
        if (other !== view && (other.scrollLeft !== view.scrollLeft || other.scrollTop !== view.scrollTop)) {
          other.scrollLeft = view.scrollLeft; other.scrollTop = view.scrollTop;
        }
      }
    });
  }
  loadModel();
}

init();
