// The page: pick or drop an image (or paste a review), show the prediction, correct it.
// Plain JS, no build step. Talks to /info, /predict and /feedback.
"use strict";

const $ = (id) => document.getElementById(id);
const S = { info: null, file: null, img: null, text: "", result: null, ids: null, fixIds: null, point: null, drag: null, maskFile: null };

function status(msg, kind) {
  const el = $("status");
  el.textContent = msg || "";
  el.className = kind || "";
}

async function api(path, options) {
  const res = await fetch(path, options);
  let body = null;
  try { body = await res.json(); } catch (e) { body = { error: `HTTP ${res.status}` }; }
  if (!res.ok) throw new Error(body.error || body.detail || `HTTP ${res.status}`);
  return body;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "style") e.style.cssText = v; else if (k in e) e[k] = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

const rgb = (c) => `rgb(${c[0]},${c[1]},${c[2]})`;
const pct = (p) => `${(100 * p).toFixed(1)}%`;

// -- start --------------------------------------------------------------------------------
async function start() {
  try {
    S.info = await api("/info");
  } catch (e) {
    status(`Cannot reach the model: ${e.message}`, "error");
    return;
  }
  $("name").textContent = S.info.name || S.info.task;
  $("task").textContent = { multilabel: "image tags", segmentation: "segmentation", point: "head centre", text: "review sentiment", classify: "image class" }[S.info.task]
    + (S.info.tta ? " · test-time augmentation: each answer averaged over the image's flips" : "");
  if (S.info.task === "text") {
    $("text-input").hidden = false;
    $("predict-text").onclick = () => predictText($("text").value);
  } else {
    $("image-input").hidden = false;
    $("file").onchange = (e) => e.target.files[0] && predictImage(e.target.files[0]);
    const drop = $("drop");
    drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("over"); };
    drop.ondragleave = () => drop.classList.remove("over");
    drop.ondrop = (e) => { e.preventDefault(); drop.classList.remove("over"); if (e.dataTransfer.files[0]) predictImage(e.dataTransfer.files[0]); };
  }
  $("wrong").onclick = openFix;
  $("send-fix").onclick = sendFix;
  setupCanvasInput();
  document.body.dataset.state = "ready";
}

// -- predictions ---------------------------------------------------------------------------
function loadImage(file) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the browser cannot show this file as an image"));
    img.src = URL.createObjectURL(file);
  });
}

function shown(message) {
  render();
  status(message, "ok");
  $("wrong").hidden = false;
  $("result").dataset.state = "done";
  document.body.dataset.state = "predicted";
}

function failed(e) {
  $("result").dataset.state = "error";
  status(e.message, "error");
}

async function predictImage(file) {
  S.file = file; S.result = null; S.ids = S.fixIds = S.point = S.maskFile = null;
  $("fix").hidden = true; $("wrong").hidden = true;
  $("result").dataset.state = "busy";
  status(`Predicting ${file.name}…`);
  const form = new FormData();
  form.append("file", file);
  try {
    const [img, result] = await Promise.all([loadImage(file).catch(() => null), api("/predict", { method: "POST", body: form })]);
    S.img = img; S.result = result;
    if (S.info.task === "segmentation") S.ids = await decodeMask(result.mask_png, result.width, result.height);
    $("view").hidden = false;
    shown(`Prediction for ${file.name}.`);
  } catch (e) {
    failed(e);
  }
}

async function predictText(text) {
  S.text = text; S.result = null;
  $("fix").hidden = true; $("wrong").hidden = true;
  $("result").dataset.state = "busy";
  try {
    S.result = await api("/predict", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ text }) });
    $("view").hidden = false; $("stage").hidden = true;
    shown("Prediction for the review.");
  } catch (e) {
    failed(e);
  }
}

function decodeMask(b64, w, h) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => {
      const c = el("canvas", { width: w, height: h });
      const ctx = c.getContext("2d", { willReadFrequently: true });
      ctx.drawImage(img, 0, 0);
      const px = ctx.getImageData(0, 0, w, h).data;
      const ids = new Uint8Array(w * h);
      for (let i = 0; i < ids.length; i++) ids[i] = px[4 * i];
      resolve(ids);
    };
    img.onerror = () => reject(new Error("cannot decode the mask PNG"));
    img.src = `data:image/png;base64,${b64}`;
  });
}

// -- drawing -------------------------------------------------------------------------------
function render() {
  const r = S.result, t = S.info.task, box = $("result");
  box.replaceChildren();
  if (t === "text") {
    box.append(el("div", { className: "label" }, r.label), el("div", {}, `probability ${pct(r.probability)}`), scoreTable(Object.entries(r.probabilities).map(([n, p]) => ({ name: n, p, yes: n === r.label }))));
    return;
  }
  draw();
  if (t === "classify") {
    box.append(el("div", { className: "label" }, r.label), el("div", {}, `probability ${pct(r.probability)}`), scoreTable(Object.entries(r.probabilities).map(([n, p]) => ({ name: n, p, yes: n === r.label })).sort((a, b) => b.p - a.p)));
  } else if (t === "multilabel") {
    box.append(el("div", {}, el("strong", {}, "Tags: "), r.predicted.length ? r.predicted.join(", ") : "(none)"));
    box.append(scoreTable(r.tags.map((x) => ({ name: x.tag, p: x.probability, yes: x.predicted, note: `≥ ${x.threshold}` }))));
  } else if (t === "points") {
    box.append(el("div", {}, el("strong", {}, "Head centre: "), `x ${r.x.toFixed(1)}, y ${r.y.toFixed(1)} px (image ${r.width}×${r.height})`));
  } else {
    box.append(el("div", {}, el("strong", {}, "Classes in the image")));
    const rows = r.shares.map((s) => el("tr", {}, el("td", {}, el("span", { className: "swatch", style: `background:${rgb(s.color)}` }), s.class), el("td", {}, pct(s.share))));
    box.append(el("table", {}, ...rows));
  }
}

function scoreTable(rows) {
  return el("table", {}, ...rows.map((x) => el("tr", { className: x.yes ? "yes" : "" },
    el("td", { className: "name" }, (x.yes ? "✓ " : "") + x.name),
    el("td", { className: "bar" }, el("span", { style: `width:${(100 * x.p).toFixed(1)}%` })),
    el("td", {}, pct(x.p)), el("td", { className: "muted" }, x.note || ""))));
}

function draw() {
  const c = $("canvas"), r = S.result;
  const w = S.img ? S.img.naturalWidth : r.width, h = S.img ? S.img.naturalHeight : r.height;
  c.width = w; c.height = h;
  const ctx = c.getContext("2d");
  if (S.img) ctx.drawImage(S.img, 0, 0, w, h); else { ctx.fillStyle = "#ddd"; ctx.fillRect(0, 0, w, h); }
  const t = S.info.task;
  if (t === "segmentation") overlay(ctx, S.fixIds || S.ids, w, h);
  if (t === "points") {
    dot(ctx, r.x, r.y, "#e22", w);
    if (S.point) dot(ctx, S.point.x, S.point.y, "#1c3", w);
  }
  if (S.drag && S.drag.end) {
    const [x0, y0, x1, y1] = rect(S.drag);
    ctx.strokeStyle = "#fff"; ctx.lineWidth = Math.max(1, w / 300); ctx.setLineDash([6, 4]);
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0); ctx.setLineDash([]);
  }
}

function overlay(ctx, ids, w, h) {
  if (!ids) return;
  const pal = S.info.palette, data = ctx.getImageData(0, 0, w, h), px = data.data, a = 0.55;
  for (let i = 0; i < ids.length; i++) {
    const c = pal[ids[i]] || [0, 0, 0];
    px[4 * i] = px[4 * i] * (1 - a) + c[0] * a;
    px[4 * i + 1] = px[4 * i + 1] * (1 - a) + c[1] * a;
    px[4 * i + 2] = px[4 * i + 2] * (1 - a) + c[2] * a;
  }
  ctx.putImageData(data, 0, 0);
}

function dot(ctx, x, y, colour, w) {
  const rad = Math.max(4, w / 60);
  ctx.beginPath(); ctx.arc(x, y, rad, 0, 2 * Math.PI);
  ctx.lineWidth = Math.max(2, rad / 3); ctx.strokeStyle = colour; ctx.stroke();
  ctx.beginPath(); ctx.arc(x, y, Math.max(1.5, rad / 4), 0, 2 * Math.PI); ctx.fillStyle = colour; ctx.fill();
}

// -- corrections ---------------------------------------------------------------------------
function openFix() {
  const t = S.info.task, ctl = $("fix-controls"), help = $("fix-help");
  ctl.replaceChildren();
  $("fix").hidden = false;
  if (t === "multilabel") {
    help.textContent = "Tick the right tags:";
    const chosen = new Set(S.result.predicted);
    ctl.append(el("div", { className: "tags" }, ...S.info.classes.map((n) =>
      el("label", {}, el("input", { type: "checkbox", value: n, checked: chosen.has(n), name: "tag" }), ` ${n}`))));
  } else if (t === "text" || t === "classify") {
    help.textContent = "The right label:";
    ctl.append(...S.info.classes.map((n) => el("label", {}, el("input", { type: "radio", name: "label", value: n, checked: n !== S.result.label }), ` ${n}`)));
  } else if (t === "points") {
    help.textContent = "Click the right head centre on the photo (green).";
    $("canvas").classList.add("pick");
  } else {
    help.textContent = "Pick a class, then drag a rectangle on the photo to paint it; repeat as needed. Or upload a corrected mask (PNG of class ids).";
    S.fixIds = S.fixIds || S.ids.slice();
    ctl.append(
      el("label", {}, "class ", el("select", { id: "fix-class" }, ...S.info.classes.map((n, i) => el("option", { value: i }, n)))),
      el("label", {}, "or a mask file ", el("input", { type: "file", id: "fix-mask", accept: "image/png", onchange: (e) => { S.maskFile = e.target.files[0] || null; } })),
      el("button", { type: "button", onclick: () => { S.fixIds = S.ids.slice(); draw(); } }, "Reset"));
    $("canvas").classList.add("pick");
  }
}

function canvasXY(e) {
  const c = $("canvas"), b = c.getBoundingClientRect();
  return { x: ((e.clientX - b.left) * c.width) / b.width - 0.5, y: ((e.clientY - b.top) * c.height) / b.height - 0.5 };
}

function rect(d) {
  const W = $("canvas").width, H = $("canvas").height, cl = (v, m) => Math.max(0, Math.min(m, v));
  return [cl(Math.round(Math.min(d.start.x, d.end.x)), W), cl(Math.round(Math.min(d.start.y, d.end.y)), H), cl(Math.round(Math.max(d.start.x, d.end.x)) + 1, W), cl(Math.round(Math.max(d.start.y, d.end.y)) + 1, H)];
}

function setupCanvasInput() {
  const c = $("canvas");
  c.onclick = (e) => {
    if ($("fix").hidden || S.info.task !== "points") return;
    S.point = canvasXY(e); draw();
    status(`New point: x ${S.point.x.toFixed(1)}, y ${S.point.y.toFixed(1)}. Send it when right.`);
  };
  c.onmousedown = (e) => { if (!$("fix").hidden && S.info.task === "segmentation") S.drag = { start: canvasXY(e), end: null }; };
  c.onmousemove = (e) => { if (S.drag) { S.drag.end = canvasXY(e); draw(); } };
  window.addEventListener("mouseup", (e) => {
    if (!S.drag) return;
    const d = S.drag; S.drag = null;
    if (!d.end) { draw(); return; }
    const [x0, y0, x1, y1] = rect(d), k = Number($("fix-class").value), W = c.width;
    for (let y = y0; y < y1; y++) S.fixIds.fill(k, y * W + x0, y * W + x1);
    draw();
    status(`Painted ${x1 - x0}×${y1 - y0} px as ${S.info.classes[k]}.`);
  });
}

function idsToPng(ids, w, h) {
  const c = el("canvas", { width: w, height: h }), ctx = c.getContext("2d"), data = ctx.createImageData(w, h);
  for (let i = 0; i < ids.length; i++) { data.data[4 * i] = data.data[4 * i + 1] = data.data[4 * i + 2] = ids[i]; data.data[4 * i + 3] = 255; }
  ctx.putImageData(data, 0, 0);
  return new Promise((resolve) => c.toBlob(resolve, "image/png"));
}

// one key per correction: a retry after a lost reply is stored once (the server's Idempotency-Key)
const newKey = () => (crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(36).slice(2)}`);

async function postOnce(path, options) {
  const headers = { ...(options.headers || {}), "Idempotency-Key": newKey() };
  try {
    return await api(path, { ...options, headers });
  } catch (e) {
    if (!(e instanceof TypeError)) throw e;  // a network failure: the reply may be lost, retry with the same key
    return await api(path, { ...options, headers });
  }
}

async function sendFix() {
  const t = S.info.task;
  try {
    let saved;
    if (t === "text") {
      const label = document.querySelector("input[name=label]:checked");
      if (!label) throw new Error("pick the right label first");
      saved = await postOnce("/feedback", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ text: S.text, label: label.value }) });
    } else {
      const form = new FormData();
      form.append("file", S.file);
      if (t === "classify") {
        const label = document.querySelector("input[name=label]:checked");
        if (!label) throw new Error("pick the right label first");
        form.append("correction", JSON.stringify({ label: label.value }));
      } else if (t === "multilabel") {
        form.append("correction", JSON.stringify({ tags: [...document.querySelectorAll("input[name=tag]:checked")].map((x) => x.value) }));
      } else if (t === "points") {
        if (!S.point) throw new Error("click the right point on the photo first");
        form.append("correction", JSON.stringify({ x: S.point.x, y: S.point.y }));
      } else {
        form.append("mask", S.maskFile || await idsToPng(S.fixIds, S.result.width, S.result.height), "mask.png");
      }
      saved = await postOnce("/feedback", { method: "POST", body: form });
    }
    status(`Saved as correction #${saved.id} (${saved.count} stored). Fine-tune on them with train.py fit --data.feedback.`, "ok");
    $("fix").hidden = true; $("canvas").classList.remove("pick");
    document.body.dataset.state = "corrected";
  } catch (e) {
    status(e.message, "error");
  }
}

start();
