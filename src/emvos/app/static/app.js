// emvos app: draw object masks on frames, propagate them with the model, correct and export.
//
// Masks travel as raw bytes, one object id per pixel (H*W), so ids are exact. The mask shown on a
// frame is its annotation when it has one, else its propagated result; the first edit of a result
// copies it into an annotation, which becomes a reference for the next propagation. Every finished
// stroke is saved to the server at once.
"use strict";

const $ = (id) => document.getElementById(id);

const app = {
  state: null,            // last /api/state
  annotated: new Set(),
  results: new Set(),
  frame: 0,
  labels: null,           // Uint8Array H*W of the frame on screen
  source: "none",         // "annotation" | "result" | "none"
  image: null,            // HTMLImageElement of the frame on screen
  tool: "brush",
  size: 12,
  objectIds: [],          // objects offered in the panel
  activeId: 1,
  undo: [],
  polygon: [],            // vertices [x, y] in image pixels
  pointer: null,          // last pointer position in image pixels
  stroke: null,           // {id, last: [x, y]} while drawing
  prompt: null,           // {frame, id, base, box, clicks, drag} while the Box / Click tools refine an object
  loadToken: 0,
  saving: Promise.resolve(),
  playing: null,
  polling: null,
  imageCache: new Map(),
  review: [],             // /api/review: {index, name, object, reason, ...} of each frame to check
};

// ---------------------------------------------------------------------------------------------
// Server

async function api(path, options = {}) {
  const response = await fetch(path, options);
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return response;
}

const postJson = (path, body) => api(path, {
  method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body ?? {}),
});

async function refreshState() {
  const state = await (await api("/api/state")).json();
  const tokenChanged = !app.state || !app.state.video || !state.video || app.state.video.token !== state.video.token;
  app.state = state;
  app.annotated = new Set(state.annotated);
  app.results = new Set(state.results);
  for (const id of state.objects) if (!app.objectIds.includes(id)) app.objectIds.push(id);
  app.objectIds.sort((a, b) => a - b);
  if (tokenChanged) { resetVideo(); refreshReview(); }
  renderChrome();
  if (state.job && state.job.state === "running") startPolling();
  return tokenChanged;
}

function video() { return app.state && app.state.video; }

// The frames the server flags for review (the same flags as segment's review.json), shown on the
// timeline and listed in the panel.
async function refreshReview() {
  try {
    app.review = video() ? (await (await api("/api/review")).json()).needs_review : [];
  } catch (error) {
    showToast(error.message, true);
    return;
  }
  renderReview();
  renderMarks();
}

// ---------------------------------------------------------------------------------------------
// Video and frames

function resetVideo() {
  app.imageCache.clear();
  app.undo = [];
  app.polygon = [];
  app.frame = 0;
  const v = video();
  $("canvasBox").hidden = !v;
  $("emptyHint").hidden = !!v;
  if (!v) { app.labels = null; return; }
  app.objectIds = app.state.objects.length ? [...app.state.objects] : [1];
  app.activeId = app.objectIds[0];
  const view = $("view");
  view.width = v.width;
  view.height = v.height;
  setSize(Math.max(3, Math.round(Math.min(v.width, v.height) / 20)));
  $("frameSlider").max = v.frames - 1;
  layoutCanvas();
  loadFrame(0);
}

function frameImage(index) {
  const v = video();
  const key = `${v.token}:${index}`;
  let entry = app.imageCache.get(key);
  if (!entry) {
    const image = new Image();
    entry = new Promise((resolve, reject) => {
      image.onload = () => resolve(image);
      image.onerror = () => reject(new Error(`frame ${index} did not load`));
    });
    image.src = `/api/frames/${index}.jpg?v=${v.token}`;
    app.imageCache.set(key, entry);
    if (app.imageCache.size > 96) app.imageCache.delete(app.imageCache.keys().next().value);
  }
  return entry;
}

async function frameMask(index) {
  const v = video();
  for (const source of ["annotation", "result"]) {
    const has = source === "annotation" ? app.annotated.has(index) : app.results.has(index);
    if (!has) continue;
    const response = await fetch(`/api/frames/${index}/${source}`, {cache: "no-store"});
    if (response.ok) return {labels: new Uint8Array(await response.arrayBuffer()), source};
  }
  return {labels: new Uint8Array(v.width * v.height), source: "none"};
}

async function loadFrame(index) {
  const v = video();
  if (!v) return;
  index = Math.max(0, Math.min(v.frames - 1, index));
  const token = ++app.loadToken;
  if (index !== app.frame) { app.undo = []; app.polygon = []; }
  app.frame = index;
  $("frameSlider").value = index;
  renderFrameLabel();
  await app.saving;
  const [image, mask] = await Promise.all([frameImage(index), frameMask(index)]);
  if (token !== app.loadToken) return;
  app.image = image;
  app.labels = mask.labels;
  app.source = mask.source;
  for (let k = 1; k <= 2 && index + k < v.frames; k++) frameImage(index + k);
  renderFrameLabel();
  renderObjects();
  draw();
}

// ---------------------------------------------------------------------------------------------
// Drawing on the mask

function markEdited() {
  // The first edit of a frame's result turns it into the frame's annotation.
  app.source = "annotation";
}

function pushUndo() {
  app.undo.push({labels: app.labels.slice(), source: app.source});
  if (app.undo.length > 40) app.undo.shift();
}

function paintDisk(cx, cy, radius, id) {
  const v = video();
  const r2 = radius * radius;
  const y0 = Math.max(0, Math.floor(cy - radius)), y1 = Math.min(v.height - 1, Math.ceil(cy + radius));
  const x0 = Math.max(0, Math.floor(cx - radius)), x1 = Math.min(v.width - 1, Math.ceil(cx + radius));
  for (let y = y0; y <= y1; y++) {
    const dy = y + 0.5 - cy;
    for (let x = x0; x <= x1; x++) {
      const dx = x + 0.5 - cx;
      if (dx * dx + dy * dy <= r2) app.labels[y * v.width + x] = id;
    }
  }
}

function paintLine(from, to, id) {
  const radius = Math.max(0.5, app.size / 2);
  const steps = Math.max(1, Math.ceil(Math.hypot(to[0] - from[0], to[1] - from[1]) / Math.max(0.5, radius / 2)));
  for (let s = 1; s <= steps; s++) {
    const t = s / steps;
    paintDisk(from[0] + (to[0] - from[0]) * t, from[1] + (to[1] - from[1]) * t, radius, id);
  }
}

function fillPolygon(points, id) {
  // Even-odd scanline fill, sampling pixel centres.
  const v = video();
  for (let y = 0; y < v.height; y++) {
    const sy = y + 0.5;
    const crossings = [];
    for (let i = 0; i < points.length; i++) {
      const [ax, ay] = points[i];
      const [bx, by] = points[(i + 1) % points.length];
      if ((ay <= sy) !== (by <= sy)) crossings.push(ax + (sy - ay) * (bx - ax) / (by - ay));
    }
    crossings.sort((a, b) => a - b);
    for (let k = 0; k + 1 < crossings.length; k += 2) {
      const x0 = Math.max(0, Math.ceil(crossings[k] - 0.5));
      const x1 = Math.min(v.width - 1, Math.floor(crossings[k + 1] - 0.5));
      for (let x = x0; x <= x1; x++) app.labels[y * v.width + x] = id;
    }
  }
}

function floodFill(x, y, id) {
  // Fill the 4-connected region of the clicked pixel's label.
  const v = video();
  const start = y * v.width + x;
  const target = app.labels[start];
  if (target === id) return false;
  const stack = [start];
  app.labels[start] = id;
  while (stack.length) {
    const p = stack.pop();
    const px = p % v.width;
    const neighbours = [px > 0 ? p - 1 : -1, px < v.width - 1 ? p + 1 : -1, p - v.width, p + v.width];
    for (const q of neighbours) {
      if (q >= 0 && q < app.labels.length && app.labels[q] === target) {
        app.labels[q] = id;
        stack.push(q);
      }
    }
  }
  return true;
}

function saveMask() {
  const index = app.frame;
  const body = app.labels.slice();
  app.saving = app.saving.then(async () => {
    try {
      const response = await api(`/api/frames/${index}/annotation`, {
        method: "PUT", headers: {"Content-Type": "application/octet-stream"}, body,
      });
      const {annotated} = await response.json();
      if (annotated) app.annotated.add(index); else app.annotated.delete(index);
      if (index === app.frame && !annotated) app.source = app.results.has(index) ? "result" : "none";
      renderMarks();
      renderFrameLabel();
    } catch (error) {
      showToast(`Could not save frame ${index}: ${error.message}`, true);
    }
  });
  return app.saving;
}

function commitEdit() {
  markEdited();
  draw();
  renderObjects();
  saveMask();
}

function imagePoint(event) {
  const rect = $("cursor").getBoundingClientRect();
  const v = video();
  return [(event.clientX - rect.left) / rect.width * v.width, (event.clientY - rect.top) / rect.height * v.height];
}

function closePolygon(erase) {
  if (app.polygon.length >= 3) {
    pushUndo();
    fillPolygon(app.polygon, erase ? 0 : app.activeId);
    app.polygon = [];
    commitEdit();
  } else {
    app.polygon = [];
  }
  drawCursor();
}

function startPrompt() {
  if (!app.prompt || app.prompt.frame !== app.frame || app.prompt.id !== app.activeId) {
    pushUndo();
    app.prompt = {frame: app.frame, id: app.activeId, base: app.labels.slice(), box: objectBox(app.activeId),
                  clicks: [], drag: null};
  }
  return app.prompt;
}

// The box [x0, y0, x1, y1] around the object's pixels in this frame (null if it has none): clicks on
// an object that is already drawn refine its mask within that box.
function objectBox(id) {
  const width = video().width;
  let x0 = Infinity, y0 = Infinity, x1 = -1, y1 = -1;
  for (let p = 0; p < app.labels.length; p++) {
    if (app.labels[p] !== id) continue;
    const x = p % width, y = Math.floor(p / width);
    if (x < x0) x0 = x;
    if (x > x1) x1 = x;
    if (y < y0) y0 = y;
    if (y > y1) y1 = y;
  }
  return x1 < 0 ? null : [x0, y0, x1 + 1, y1 + 1];
}

async function runPrompt(prompt) {
  const response = await api(`/api/frames/${prompt.frame}/prompt`, {
    method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({box: prompt.box, clicks: prompt.clicks}),
  });
  if (!response.ok || app.prompt !== prompt || app.frame !== prompt.frame) return;
  const mask = new Uint8Array(await response.arrayBuffer());
  const labels = prompt.base.slice();
  for (let p = 0; p < labels.length; p++) {
    if (mask[p]) labels[p] = prompt.id;
    else if (labels[p] === prompt.id) labels[p] = 0;
  }
  app.labels = labels;
  commitEdit();
}

function onPointerDown(event) {
  if (!video() || !app.labels || event.button !== 0) return;
  event.preventDefault();
  const point = imagePoint(event);
  const erase = event.shiftKey;
  if (app.tool === "brush" || app.tool === "eraser") {
    $("cursor").setPointerCapture(event.pointerId);
    pushUndo();
    const id = app.tool === "eraser" || erase ? 0 : app.activeId;
    app.stroke = {id, last: point};
    paintLine(point, point, id);
    draw();
  } else if (app.tool === "fill") {
    const x = Math.floor(point[0]), y = Math.floor(point[1]);
    const v = video();
    if (x < 0 || y < 0 || x >= v.width || y >= v.height) return;
    pushUndo();
    if (floodFill(x, y, erase ? 0 : app.activeId)) commitEdit(); else app.undo.pop();
  } else if (app.tool === "box") {
    $("cursor").setPointerCapture(event.pointerId);
    const prompt = startPrompt();
    prompt.drag = [point, point];
  } else if (app.tool === "click") {
    const prompt = startPrompt();
    prompt.clicks.push([point[0], point[1], !erase]);
    drawCursor();
    if (prompt.box || prompt.clicks.some((click) => click[2])) runPrompt(prompt);
  } else if (app.tool === "polygon") {
    const first = app.polygon[0];
    const scale = $("cursor").getBoundingClientRect().width / video().width;
    if (first && app.polygon.length >= 3 && Math.hypot(point[0] - first[0], point[1] - first[1]) * scale < 9) {
      closePolygon(erase);
    } else {
      app.polygon.push(point);
      drawCursor();
    }
  }
}

function onPointerMove(event) {
  if (!video()) return;
  app.pointer = imagePoint(event);
  if (app.prompt && app.prompt.drag) app.prompt.drag[1] = app.pointer;
  if (app.stroke) {
    paintLine(app.stroke.last, app.pointer, app.stroke.id);
    app.stroke.last = app.pointer;
    draw();
  }
  drawCursor();
}

function onPointerUp() {
  const prompt = app.prompt;
  if (prompt && prompt.drag) {
    const [[ax, ay], [bx, by]] = prompt.drag;
    prompt.drag = null;
    if (Math.abs(bx - ax) >= 2 && Math.abs(by - ay) >= 2) {
      prompt.box = [Math.min(ax, bx), Math.min(ay, by), Math.max(ax, bx), Math.max(ay, by)];
      runPrompt(prompt);
    }
    drawCursor();
    return;
  }
  if (!app.stroke) return;
  app.stroke = null;
  commitEdit();
}

// ---------------------------------------------------------------------------------------------
// Rendering

function layoutCanvas() {
  const v = video();
  if (!v) return;
  const stage = $("stage");
  const scale = Math.min((stage.clientWidth - 32) / v.width, (stage.clientHeight - 32) / v.height);
  const width = Math.max(1, Math.floor(v.width * scale)), height = Math.max(1, Math.floor(v.height * scale));
  const view = $("view");
  view.style.width = `${width}px`;
  view.style.height = `${height}px`;
  view.classList.toggle("pixelated", scale >= 2);
  const cursor = $("cursor");
  cursor.width = Math.round(width * devicePixelRatio);
  cursor.height = Math.round(height * devicePixelRatio);
  drawCursor();
}

function colour(id) {
  const p = app.state.palette;
  return [p[3 * id], p[3 * id + 1], p[3 * id + 2]];
}

function draw() {
  const v = video();
  if (!v || !app.image) return;
  const ctx = $("view").getContext("2d", {willReadFrequently: true});
  ctx.drawImage(app.image, 0, 0, v.width, v.height);
  if (!$("showMaskInput").checked) return;
  const alpha = Math.round(Number($("opacityInput").value) / 100 * 255);
  const pixels = ctx.getImageData(0, 0, v.width, v.height);
  const data = pixels.data, labels = app.labels, w = v.width, h = v.height;
  const palette = app.state.palette;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const p = y * w + x;
      const id = labels[p];
      if (!id) continue;
      const edge = (x > 0 && labels[p - 1] !== id) || (x < w - 1 && labels[p + 1] !== id) ||
                   (y > 0 && labels[p - w] !== id) || (y < h - 1 && labels[p + w] !== id);
      const a = edge ? 255 : alpha;
      const o = 4 * p;
      data[o] += ((palette[3 * id] - data[o]) * a) >> 8;
      data[o + 1] += ((palette[3 * id + 1] - data[o + 1]) * a) >> 8;
      data[o + 2] += ((palette[3 * id + 2] - data[o + 2]) * a) >> 8;
    }
  }
  ctx.putImageData(pixels, 0, 0);
}

function drawCursor() {
  const canvas = $("cursor");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const v = video();
  if (!v) return;
  const scale = canvas.width / v.width;
  const toScreen = ([x, y]) => [x * scale, y * scale];
  ctx.lineWidth = devicePixelRatio;
  const [r, g, b] = colour(app.activeId);
  if (app.polygon.length) {
    ctx.strokeStyle = `rgb(${r},${g},${b})`;
    ctx.fillStyle = `rgba(${r},${g},${b},0.25)`;
    ctx.beginPath();
    app.polygon.map(toScreen).forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    if (app.pointer) ctx.lineTo(...toScreen(app.pointer));
    ctx.closePath();
    ctx.fill();
    ctx.stroke();
    const [fx, fy] = toScreen(app.polygon[0]);
    ctx.strokeRect(fx - 4 * devicePixelRatio, fy - 4 * devicePixelRatio, 8 * devicePixelRatio, 8 * devicePixelRatio);
  }
  if (app.prompt && app.prompt.frame === app.frame && (app.tool === "box" || app.tool === "click")) {
    const prompt = app.prompt;
    const box = prompt.drag ? [...prompt.drag[0], ...prompt.drag[1]] : prompt.box;
    ctx.lineWidth = 2 * devicePixelRatio;
    if (box) {
      const [ax, ay] = toScreen([box[0], box[1]]), [bx, by] = toScreen([box[2], box[3]]);
      ctx.strokeStyle = "#ffffff";
      ctx.strokeRect(ax, ay, bx - ax, by - ay);
    }
    for (const [x, y, positive] of prompt.clicks) {
      const [sx, sy] = toScreen([x, y]);
      ctx.beginPath();
      ctx.arc(sx, sy, 5 * devicePixelRatio, 0, 2 * Math.PI);
      ctx.fillStyle = positive ? "#22cc44" : "#ee3333";
      ctx.fill();
    }
  }
  if (app.pointer && (app.tool === "brush" || app.tool === "eraser")) {
    const [x, y] = toScreen(app.pointer);
    ctx.beginPath();
    ctx.arc(x, y, Math.max(1, app.size / 2 * scale), 0, 2 * Math.PI);
    ctx.strokeStyle = "rgba(0,0,0,0.7)";
    ctx.lineWidth = 3 * devicePixelRatio;
    ctx.stroke();
    ctx.strokeStyle = app.tool === "eraser" ? "#ffffff" : `rgb(${r},${g},${b})`;
    ctx.lineWidth = 1.5 * devicePixelRatio;
    ctx.stroke();
  }
}

function renderFrameLabel() {
  const v = video();
  $("frameLabel").textContent = v ? `frame ${app.frame} / ${v.frames - 1}` : "–";
  const badge = $("sourceBadge");
  const annotated = app.annotated.has(app.frame);
  const source = annotated ? "annotation" : app.source;
  badge.className = `badge ${source}`;
  badge.textContent = {annotation: "annotated", result: "propagated", none: "no mask"}[source];
  $("unannotateButton").disabled = !annotated;
}

function renderMarks() {
  const canvas = $("marks");
  const v = video();
  canvas.width = canvas.clientWidth * devicePixelRatio;
  canvas.height = canvas.clientHeight * devicePixelRatio;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!v) return;
  // The slider's thumb centre travels over the track minus the thumb width (about 16 px).
  const inset = 8 * devicePixelRatio, span = canvas.width - 2 * inset;
  const x = (i) => inset + (v.frames > 1 ? i / (v.frames - 1) : 0.5) * span;
  const cell = Math.max(devicePixelRatio, span / Math.max(1, v.frames - 1));
  ctx.fillStyle = "#2f8f5b";
  for (const i of app.results) ctx.fillRect(x(i) - cell / 2, canvas.height * 0.45, cell, canvas.height * 0.55);
  ctx.fillStyle = "#ffcc33";
  for (const i of app.annotated) ctx.fillRect(x(i) - devicePixelRatio, 0, 2 * devicePixelRatio, canvas.height);
  ctx.fillStyle = "#ff5d5d";
  const half = 4 * devicePixelRatio, tip = canvas.height * 0.45;
  for (const i of flaggedFrames()) {
    ctx.beginPath();
    ctx.moveTo(x(i) - half, 0);
    ctx.lineTo(x(i) + half, 0);
    ctx.lineTo(x(i), tip);
    ctx.closePath();
    ctx.fill();
  }
}

function flaggedFrames() { return [...new Set(app.review.map((flag) => flag.index))].sort((a, b) => a - b); }

// A click on the timeline's marks jumps to the nearest flagged frame within a few pixels, else to the frame there.
function onMarksClick(event) {
  const v = video();
  if (!v) return;
  const rect = $("marks").getBoundingClientRect();
  const inset = 8, span = rect.width - 2 * inset;
  const position = (i) => inset + (v.frames > 1 ? i / (v.frames - 1) : 0.5) * span;
  const clicked = event.clientX - rect.left;
  const near = flaggedFrames().filter((i) => Math.abs(position(i) - clicked) <= 6)
    .sort((a, b) => Math.abs(position(a) - clicked) - Math.abs(position(b) - clicked));
  loadFrame(near.length ? near[0] : Math.round((clicked - inset) / span * (v.frames - 1)));
}

function nextFlag(step) {
  const frames = flaggedFrames();
  const target = step > 0 ? frames.find((i) => i > app.frame) : frames.reverse().find((i) => i < app.frame);
  if (target !== undefined) loadFrame(target);
}

function renderReview() {
  const list = $("reviewList");
  list.replaceChildren();
  for (const flag of app.review) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.textContent = `frame ${flag.index} · object ${flag.object}: ${flag.reason}`;
    button.dataset.frame = flag.index;
    button.addEventListener("click", () => loadFrame(flag.index));
    item.append(button);
    list.append(item);
  }
  $("reviewCount").textContent = app.review.length ? `${flaggedFrames().length} frame(s) to check` :
    app.results.size ? "nothing flagged" : "";
}

function renderExportFormats() {
  const box = $("exportFormats");
  if (box.childElementCount || !app.state.export_formats) return;
  const {offered, default: chosen} = app.state.export_formats;
  for (const format of offered) {
    const label = document.createElement("label");
    const input = document.createElement("input");
    input.type = "checkbox";
    input.value = format;
    input.checked = chosen.includes(format);
    label.append(input, ` ${format}`);
    box.append(label);
  }
}

function exportFormats() { return [...$("exportFormats").querySelectorAll("input:checked")].map((input) => input.value); }

function renderObjects() {
  const list = $("objectList");
  list.replaceChildren();
  const present = new Set(app.labels || []);
  app.objectIds.forEach((id, n) => {
    const item = document.createElement("li");
    item.className = id === app.activeId ? "active" : "";
    item.dataset.id = id;
    if (n < 9) item.title = `key ${n + 1}`;
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${colour(id).join(",")})`;
    const name = document.createElement("span");
    name.textContent = `Object ${id}`;
    item.append(swatch, name);
    if (present.has(id)) {
      const here = document.createElement("span");
      here.className = "present";
      here.title = "on this frame";
      item.append(here);
    }
    item.addEventListener("click", () => selectObject(id));
    list.append(item);
  });
}

function renderChrome() {
  const v = video();
  $("videoName").textContent = v ? `${v.name} · ${v.frames} frames · ${v.width}×${v.height}` : "no video";
  const busy = !!(app.state.job && app.state.job.state === "running");
  for (const id of ["forwardButton", "backwardButton", "exportButton"]) $(id).disabled = !v || busy;
  const error = app.state.model.error;
  $("modelError").hidden = !error;
  $("modelError").textContent = error || "";
  const exports = $("exportList");
  exports.replaceChildren();
  for (const name of app.state.exports) {
    const item = document.createElement("li");
    const link = document.createElement("a");
    link.href = `/api/exports/${encodeURIComponent(name)}`;
    link.textContent = `⬇ ${name}`;
    link.download = name;
    item.append(link);
    exports.append(item);
  }
  renderExportFormats();
  renderObjects();
  renderMarks();
  renderFrameLabel();
  renderJob(app.state.job);
}

function renderJob(job) {
  const box = $("jobBox");
  if (!job || job.state !== "running") { box.hidden = true; return; }
  box.hidden = false;
  const bar = $("jobBar");
  if (job.total) { bar.max = job.total; bar.value = job.done; } else { bar.removeAttribute("value"); }
  $("jobText").textContent = job.total ? `${job.message} · ${job.done}/${job.total}` : job.message;
}

let toastTimer = null;
function showToast(message, isError = false) {
  const toast = $("toast");
  toast.textContent = message;
  toast.className = isError ? "toast error" : "toast";
  toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { toast.hidden = true; }, isError ? 9000 : 3500);
}

// ---------------------------------------------------------------------------------------------
// Jobs

function startPolling() {
  if (app.polling) return;
  let ticks = 0;
  app.polling = setInterval(async () => {
    let job;
    try { job = await (await api("/api/job")).json(); } catch (_) { return; }
    renderJob(job);
    ticks += 1;
    if (job && job.state === "running") {
      if (ticks % 4 === 0 && job.kind === "propagate") {
        app.results = new Set((await (await api("/api/state")).json()).results);
        renderMarks();
      }
      return;
    }
    clearInterval(app.polling);
    app.polling = null;
    if (job) {
      if (job.state === "failed") showToast(job.error, true); else showToast(job.message);
    }
    const changedVideo = await refreshState();
    if (!changedVideo && job && job.kind === "propagate") { loadFrame(app.frame); refreshReview(); }
  }, 300);
}

async function runJob(request) {
  try {
    const job = await (await request()).json();
    renderJob(job);
    app.state.job = job;
    renderChrome();
    startPolling();
  } catch (error) {
    showToast(error.message, true);
  }
}

async function propagate(direction) {
  await app.saving;
  runJob(() => postJson("/api/propagate", {start: app.frame, direction}));
}

// ---------------------------------------------------------------------------------------------
// Controls

function setTool(tool) {
  app.tool = tool;
  app.polygon = [];
  app.prompt = null;
  for (const button of document.querySelectorAll(".tool")) button.classList.toggle("active", button.dataset.tool === tool);
  drawCursor();
}

function setSize(size) {
  app.size = Math.max(1, Math.min(100, size));
  $("sizeInput").value = app.size;
  $("sizeValue").textContent = app.size;
  drawCursor();
}

function selectObject(id) {
  app.activeId = id;
  renderObjects();
  drawCursor();
}

function addObject() {
  const next = Math.max(0, ...app.objectIds) + 1;
  if (next > 255) { showToast("255 objects at most", true); return; }
  app.objectIds.push(next);
  selectObject(next);
}

function undo() {
  app.prompt = null;
  const previous = app.undo.pop();
  if (!previous) return;
  app.labels = previous.labels;
  draw();
  renderObjects();
  if (previous.source === "annotation") saveMask();
  else if (app.annotated.has(app.frame)) {
    app.saving = app.saving.then(() => api(`/api/frames/${app.frame}/annotation`, {method: "DELETE"}))
      .then(() => { app.annotated.delete(app.frame); renderMarks(); renderFrameLabel(); })
      .catch((error) => showToast(error.message, true));
    app.source = previous.source;
  }
}

async function removeAnnotation() {
  await app.saving;
  try {
    await api(`/api/frames/${app.frame}/annotation`, {method: "DELETE"});
    app.annotated.delete(app.frame);
    await loadFrame(app.frame);
    renderMarks();
  } catch (error) { showToast(error.message, true); }
}

async function importMask(file) {
  const form = new FormData();
  form.append("mask", file);
  await app.saving;
  try {
    pushUndo();
    const {objects} = await (await api(`/api/frames/${app.frame}/import`, {method: "POST", body: form})).json();
    app.annotated.add(app.frame);
    for (const id of objects) if (!app.objectIds.includes(id)) app.objectIds.push(id);
    app.objectIds.sort((a, b) => a - b);
    await loadFrame(app.frame);
    renderMarks();
    showToast(`Imported ${file.name}: objects ${objects.join(", ")}`);
  } catch (error) {
    app.undo.pop();
    showToast(error.message, true);
  }
}

function togglePlay() {
  const v = video();
  if (!v) return;
  if (app.playing) { clearInterval(app.playing); app.playing = null; $("playButton").textContent = "Play"; return; }
  if (app.frame >= v.frames - 1) loadFrame(0);
  $("playButton").textContent = "Pause";
  app.playing = setInterval(() => {
    if (app.frame >= v.frames - 1) { togglePlay(); return; }
    loadFrame(app.frame + 1);
  }, 1000 / Math.min(30, v.fps || 24));
}

// -- opening videos ---------------------------------------------------------------------------

function confirmReplace() {
  const v = video();
  return !v || confirm(`Replace ${v.name}? Its annotations and results in this workspace will be deleted.`);
}

async function browse(path) {
  try {
    const listing = await (await api(`/api/files?path=${encodeURIComponent(path)}`)).json();
    $("rootPath").textContent = app.state.root;
    const crumbs = $("crumbs");
    crumbs.replaceChildren();
    const parts = listing.path ? listing.path.split("/") : [];
    const top = document.createElement("a");
    top.textContent = "working folder";
    top.addEventListener("click", () => browse(""));
    crumbs.append(top);
    parts.forEach((part, i) => {
      const link = document.createElement("a");
      link.textContent = part;
      link.addEventListener("click", () => browse(parts.slice(0, i + 1).join("/")));
      crumbs.append(" / ", link);
    });
    const list = $("fileList");
    list.replaceChildren();
    for (const entry of listing.entries) {
      const item = document.createElement("li");
      item.textContent = entry.kind === "folder" ? `📁 ${entry.name}` : `🎞 ${entry.name}`;
      item.addEventListener("click", () => (entry.kind === "folder" ? browse(entry.path) : openPath(entry.path)));
      list.append(item);
    }
    if (!listing.entries.length) {
      const item = document.createElement("li");
      item.className = "empty";
      item.textContent = "no videos or folders here";
      list.append(item);
    }
    const folderButton = $("openFolderButton");
    folderButton.hidden = !listing.frames;
    folderButton.textContent = `Open this folder's ${listing.frames} frames`;
    folderButton.onclick = () => openPath(listing.path || ".");
  } catch (error) {
    showToast(error.message, true);
  }
}

async function openPath(path) {
  if (!confirmReplace()) return;
  $("openDialog").close();
  runJob(() => postJson("/api/open", {path, replace: true}));
}

function upload(files, name) {
  if (!files.length || !confirmReplace()) return;
  const form = new FormData();
  for (const file of files) form.append("files", file);
  form.append("name", name);
  form.append("replace", "true");
  $("openDialog").close();
  showToast(`Uploading ${files.length} file(s)…`);
  runJob(() => api("/api/upload", {method: "POST", body: form}));
}

function openDialog() {
  $("openDialog").showModal();
  browse("");
}

function onKey(event) {
  if (event.target.closest("input[type=text], dialog") || !video()) return;
  const key = event.key;
  if ((event.ctrlKey || event.metaKey) && key.toLowerCase() === "z") { event.preventDefault(); undo(); return; }
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const step = event.shiftKey ? 10 : 1;
  const actions = {
    ArrowLeft: () => loadFrame(app.frame - step), ArrowRight: () => loadFrame(app.frame + step),
    a: () => loadFrame(app.frame - step), d: () => loadFrame(app.frame + step),
    Home: () => loadFrame(0), End: () => loadFrame(video().frames - 1),
    " ": togglePlay,
    b: () => setTool("brush"), e: () => setTool("eraser"), p: () => setTool("polygon"), f: () => setTool("fill"),
    x: () => setTool("box"), c: () => setTool("click"),
    "[": () => setSize(app.size - Math.max(1, Math.round(app.size / 8))),
    "]": () => setSize(app.size + Math.max(1, Math.round(app.size / 8))),
    n: addObject, h: () => { $("showMaskInput").checked = !$("showMaskInput").checked; draw(); },
    o: openDialog, r: () => nextFlag(event.shiftKey ? -1 : 1),
    Enter: () => closePolygon(event.shiftKey), Escape: () => { app.polygon = []; drawCursor(); },
    Backspace: () => { app.polygon.pop(); drawCursor(); },
  };
  const action = actions[key] || actions[key.toLowerCase()];
  if (action) { event.preventDefault(); action(); return; }
  if (/^[1-9]$/.test(key) && app.objectIds[Number(key) - 1] !== undefined) selectObject(app.objectIds[Number(key) - 1]);
}

function bind() {
  for (const button of document.querySelectorAll(".tool")) button.addEventListener("click", () => setTool(button.dataset.tool));
  $("sizeInput").addEventListener("input", (e) => setSize(Number(e.target.value)));
  $("opacityInput").addEventListener("input", draw);
  $("showMaskInput").addEventListener("change", draw);
  $("addObjectButton").addEventListener("click", addObject);
  $("undoButton").addEventListener("click", undo);
  $("clearButton").addEventListener("click", () => {
    if (!app.labels || !app.labels.some((id) => id)) return;
    pushUndo();
    app.labels.fill(0);
    commitEdit();
  });
  $("importInput").addEventListener("change", (e) => { if (e.target.files[0]) importMask(e.target.files[0]); e.target.value = ""; });
  $("unannotateButton").addEventListener("click", removeAnnotation);
  $("forwardButton").addEventListener("click", () => propagate("forward"));
  $("backwardButton").addEventListener("click", () => propagate("backward"));
  $("exportButton").addEventListener("click", () => runJob(() => postJson("/api/export", {formats: exportFormats()})));
  $("marks").addEventListener("click", onMarksClick);
  $("cancelButton").addEventListener("click", () => postJson("/api/job/cancel").catch((e) => showToast(e.message, true)));
  $("prevButton").addEventListener("click", () => loadFrame(app.frame - 1));
  $("nextButton").addEventListener("click", () => loadFrame(app.frame + 1));
  $("playButton").addEventListener("click", togglePlay);
  $("frameSlider").addEventListener("input", (e) => loadFrame(Number(e.target.value)));
  $("openButton").addEventListener("click", openDialog);
  $("emptyOpenButton").addEventListener("click", openDialog);
  $("openPathButton").addEventListener("click", () => { const p = $("pathInput").value.trim(); if (p) openPath(p); });
  $("pathInput").addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); $("openPathButton").click(); } });
  $("uploadVideoInput").addEventListener("change", (e) => { const f = e.target.files[0]; if (f) upload([f], f.name.replace(/\.[^.]*$/, "")); e.target.value = ""; });
  $("uploadFramesInput").addEventListener("change", (e) => { upload([...e.target.files], "frames"); e.target.value = ""; });
  const cursor = $("cursor");
  cursor.addEventListener("pointerdown", onPointerDown);
  cursor.addEventListener("pointermove", onPointerMove);
  cursor.addEventListener("pointerup", onPointerUp);
  cursor.addEventListener("pointercancel", onPointerUp);
  cursor.addEventListener("pointerleave", () => { if (!app.stroke) { app.pointer = null; drawCursor(); } });
  cursor.addEventListener("dblclick", () => { if (app.tool === "polygon") closePolygon(false); });
  cursor.addEventListener("contextmenu", (e) => e.preventDefault());
  document.addEventListener("keydown", onKey);
  window.addEventListener("resize", () => { layoutCanvas(); renderMarks(); });
}

bind();
setTool("brush");
refreshState().catch((error) => showToast(`Cannot reach the emvos server: ${error.message}`, true));
