// The drawing pad of `mnist-kit ui`: strokes on a canvas, sent as PNG to this page's server (/api/predict),
// which asks TorchServe. Plain JavaScript, no build step, nothing from elsewhere: it works offline.
"use strict";

const $ = (id) => document.getElementById(id);
const pad = $("pad");
const ink = pad.getContext("2d");
const REQUEST_TIMEOUT_MS = 30000;
const state = {
  strokes: [], // {width, points: [[x, y], ...]} in canvas pixels
  upload: null, // {blob, bitmap, name}: a picked or dropped image, shown until the next stroke
  revision: 0, // every change of the drawing; the answer shown says which revision it is for
  drawing: null, // the pointer drawing now
  timer: null,
  request: null, // AbortController of the prediction in flight
  debounceMs: 150,
  answered: null, // {blob, reading}: the image sent and the answer shown, which a correction refers to
};

// ---- drawing --------------------------------------------------------------------------------------------------

function paint() {
  ink.fillStyle = "#fff";
  ink.fillRect(0, 0, pad.width, pad.height);
  if (state.upload) {
    const { bitmap, name, unreadable } = state.upload;
    if (bitmap) {
      const scale = Math.min(pad.width / bitmap.width, pad.height / bitmap.height);
      const w = bitmap.width * scale, h = bitmap.height * scale;
      ink.drawImage(bitmap, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
    } else if (unreadable) {
      ink.fillStyle = "#5d6678";
      ink.font = "14px system-ui, sans-serif";
      ink.textAlign = "center";
      ink.fillText(`${name}: no preview here,`, pad.width / 2, pad.height / 2 - 8);
      ink.fillText("sent to the model as it is", pad.width / 2, pad.height / 2 + 12);
    }
  }
  ink.strokeStyle = ink.fillStyle = "#000";
  ink.lineCap = ink.lineJoin = "round";
  for (const { width, points } of state.strokes) {
    ink.lineWidth = width;
    ink.beginPath();
    ink.moveTo(points[0][0], points[0][1]);
    if (points.length === 1) ink.lineTo(points[0][0] + 0.01, points[0][1]); // a dot
    for (const [x, y] of points.slice(1)) ink.lineTo(x, y);
    ink.stroke();
  }
}

function canvasPoint(event) {
  const box = pad.getBoundingClientRect();
  return [((event.clientX - box.left) * pad.width) / box.width, ((event.clientY - box.top) * pad.height) / box.height];
}

pad.addEventListener("pointerdown", (event) => {
  if (event.button !== 0 || state.drawing !== null) return;
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  state.drawing = event.pointerId;
  state.upload = null;
  state.strokes.push({ width: Number($("brush").value), points: [canvasPoint(event)] });
  changed(true);
});

pad.addEventListener("pointermove", (event) => {
  if (event.pointerId !== state.drawing) return;
  const stroke = state.strokes[state.strokes.length - 1];
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  for (const e of events.length ? events : [event]) stroke.points.push(canvasPoint(e));
  changed(true);
});

function penUp(event) {
  if (event.pointerId !== state.drawing) return;
  state.drawing = null;
  changed(false);
}
pad.addEventListener("pointerup", penUp);
pad.addEventListener("pointercancel", penUp);

function undo() {
  if (state.upload) state.upload = null;
  else state.strokes.pop();
  changed(false);
}

function clear() {
  state.strokes = [];
  state.upload = null;
  changed(false);
}

$("undo").addEventListener("click", undo);
$("clear").addEventListener("click", clear);
document.addEventListener("keydown", (event) => {
  if (event.target instanceof HTMLInputElement && event.target.type !== "range") return;
  if (event.key === "Escape") clear();
  else if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "z") {
    event.preventDefault();
    undo();
  }
});

// ---- images from files ---------------------------------------------------------------------------------------

function openImage(file) {
  if (!file) return;
  const upload = { blob: file, bitmap: null, name: file.name };
  state.strokes = [];
  state.upload = upload;
  changed(false);
  createImageBitmap(file, { imageOrientation: "from-image" }).then( // a phone photo upright, as the model reads it
    (bitmap) => {
      upload.bitmap = bitmap;
      if (state.upload === upload) paint();
    },
    () => {
      upload.unreadable = true; // a format this browser cannot show (TIFF, ...): TorchServe may still read it
      if (state.upload === upload) paint();
    },
  );
}

$("file").addEventListener("change", (event) => {
  openImage(event.target.files[0]);
  event.target.value = "";
});
const drop = $("drop");
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("dragging");
});
drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("dragging");
  openImage(event.dataTransfer.files[0]);
});

// ---- predictions --------------------------------------------------------------------------------------------

// Every change repaints and bumps the revision; while the pen moves the prediction waits until it rests for
// debounceMs, and a pen-up, an undo or an image asks at once.
function changed(moving) {
  paint();
  state.revision += 1;
  pad.dataset.revision = String(state.revision);
  clearTimeout(state.timer);
  hideHeat();
  if (!state.strokes.length && !state.upload) {
    if (state.request) state.request.abort();
    showNothing();
    return;
  }
  state.timer = setTimeout(predict, moving ? state.debounceMs : 0);
}

function picture() {
  if (state.upload) return Promise.resolve(state.upload.blob);
  return new Promise((resolve) => pad.toBlob(resolve, "image/png"));
}

// POST a picture to this page's server; resolves to {ok, status, body} and never rejects.
async function post(path, blob, controller) {
  const timer = setTimeout(() => {
    controller.timedOut = true;
    controller.abort();
  }, REQUEST_TIMEOUT_MS);
  try {
    const response = await fetch(path, {
      method: "POST",
      body: blob,
      headers: { "Content-Type": blob.type || "application/octet-stream" },
      signal: controller.signal,
    });
    let body;
    try {
      body = await response.json();
    } catch {
      body = { message: `the pad's server answered ${response.status} without JSON` };
    }
    return { ok: response.ok, status: response.status, body };
  } catch (error) {
    if (controller.signal.aborted && !controller.timedOut) return { aborted: true };
    const message = controller.signal.aborted
      ? `no answer within ${REQUEST_TIMEOUT_MS / 1000} s: TorchServe or the pad's server is stuck`
      : "the pad's server (mnist-kit ui) is not answering: is it still running? Start it again with `mnist-kit ui`.";
    return { ok: false, status: 0, body: { message } };
  } finally {
    clearTimeout(timer);
  }
}

async function predict() {
  const revision = state.revision;
  if (state.request) state.request.abort();
  const controller = new AbortController();
  state.request = controller;
  setBusy(true);
  const blob = await picture();
  const started = performance.now();
  const result = await post("/api/predict", blob, controller);
  if (result.aborted || revision !== state.revision) return; // a newer drawing has its own request
  state.request = null;
  setBusy(false);
  const ms = performance.now() - started;
  if (result.ok) {
    state.answered = { blob, reading: result.body }; // what a correction refers to: these bytes, this answer
    showReading(result.body, ms, revision);
  } else showError(result.body.message, revision);
}

// ---- corrections: "wrong? it is a _" -------------------------------------------------------------------------

for (let d = 0; d < 10; d++) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = String(d);
  button.dataset.testid = `correct-${d}`;
  button.title = `Store this image as a ${d}, for retraining`;
  button.addEventListener("click", () => correct(d));
  $("labels").append(button);
}

function base64(blob) {
  return new Promise((resolve) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result.split(",", 2)[1]);
    reader.readAsDataURL(blob);
  });
}

// The image exactly as it was sent, its label, and the answer it got, to this page's server (stored on this machine).
async function correct(label) {
  const { blob, reading } = state.answered || {};
  if (!blob) return;
  const body = {
    image: await base64(blob),
    label,
    answer: { digit: reading.digit, confidence: reading.confidence, version: reading.version },
  };
  let message;
  try {
    const response = await fetch("/api/feedback", {
      method: "POST",
      body: JSON.stringify(body),
      headers: { "Content-Type": "application/json" },
    });
    const answer = await response.json();
    message = response.ok ? `Stored as a ${label}, thank you: mnist-kit train --feedback learns from it.` : answer.message;
  } catch {
    message = "the pad's server (mnist-kit ui) is not answering: the correction was not stored.";
  }
  $("corrected").textContent = message;
}

// ---- what the page shows ------------------------------------------------------------------------------------

const bars = $("bars");
for (let d = 0; d < 10; d++) {
  const li = document.createElement("li");
  li.innerHTML = `<span>${d}</span><span class="track"><span class="fill"></span></span><span class="value"></span>`;
  li.dataset.testid = `bar-${d}`;
  bars.append(li);
}

function setBars(probabilities) {
  const top = probabilities ? probabilities.indexOf(Math.max(...probabilities)) : -1;
  [...bars.children].forEach((li, d) => {
    const p = probabilities ? probabilities[d] : 0;
    li.classList.toggle("top", d === top);
    li.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
    li.querySelector(".value").textContent = probabilities ? `${(100 * p).toFixed(1)} %` : "";
  });
}

function say(text, kind = "") {
  const message = $("message");
  message.textContent = text;
  message.className = kind;
}

function setBusy(busy) {
  document.body.classList.toggle("busy", busy);
}

function answered(revision) {
  $("digit").dataset.revision = String(revision);
}

function showNothing() {
  state.request = null;
  setBusy(false);
  $("digit").textContent = "";
  $("confidence").textContent = "";
  $("answered").textContent = "";
  $("explain").disabled = true;
  hideCorrect();
  setBars(null);
  drawSeen(null);
  say("Draw a digit on the pad.");
  answered(state.revision);
}

function showReading(reading, ms, revision) {
  $("digit").textContent = reading.shown;
  const percent = (100 * reading.confidence).toFixed(1);
  $("confidence").textContent = `${percent} % sure`;
  setBars(reading.probabilities);
  drawSeen(reading.pixels);
  $("explain").disabled = false;
  say(reading.verdict, reading.flags.length ? "warn" : "");
  const version = reading.version ? `version ${reading.version}` : "version unknown (management API not reachable)";
  $("answered").textContent =
    `Answered by the server at ${reading.server}, model ${reading.model} ${version}; ` +
    `${Math.round(ms)} ms round trip from this page (${Math.round(reading.ms)} ms from its server to the model server).`;
  $("correct").hidden = false;
  $("corrected").textContent = "";
  answered(revision);
}

function hideCorrect() {
  state.answered = null;
  $("correct").hidden = true;
  $("corrected").textContent = "";
}

function showError(message, revision) {
  $("digit").textContent = "";
  $("confidence").textContent = "";
  $("answered").textContent = "";
  $("explain").disabled = true;
  hideCorrect();
  setBars(null);
  drawSeen(null);
  say(message, "error");
  answered(revision);
}

function drawSeen(pixels) {
  const seen = $("seen").getContext("2d");
  seen.clearRect(0, 0, 28, 28);
  if (!pixels) return;
  const image = seen.createImageData(28, 28);
  pixels.flat().forEach((v, i) => {
    image.data.set([v, v, v, 255], 4 * i);
  });
  seen.putImageData(image, 0, 0);
}

// ---- the heat map ---------------------------------------------------------------------------------------------

function hideHeat() {
  $("heat-figure").hidden = true;
}

$("explain").addEventListener("click", async () => {
  const revision = state.revision;
  const button = $("explain");
  button.disabled = true;
  const before = button.textContent;
  button.textContent = "Computing the heat map…";
  const result = await post("/api/explain", await picture(), new AbortController());
  button.textContent = before;
  if (revision !== state.revision) return;
  button.disabled = false;
  if (!result.ok) return say(`No heat map: ${result.body.message}`, "error");
  drawHeat(result.body);
});

function drawHeat({ digit, pixels, attributions }) {
  const limit = Math.max(...attributions.flat().map(Math.abs)) || 1;
  const heat = $("heat").getContext("2d");
  const image = heat.createImageData(28, 28);
  attributions.flat().forEach((a, i) => {
    const gray = 0.45 * pixels.flat()[i];
    const t = Math.min(1, Math.abs(a) / limit);
    const color = a > 0 ? [255, 40, 30] : [40, 90, 255];
    image.data.set([...color.map((c) => Math.round(gray * (1 - t) + c * t)), 255], 4 * i);
  });
  heat.putImageData(image, 0, 0);
  $("heat-caption").textContent = `why ${digit}: red for, blue against`;
  $("heat-figure").hidden = false;
}

// ---- the server this page talks to ----------------------------------------------------------------------------

async function status() {
  try {
    const response = await fetch("/api/status", { signal: AbortSignal.timeout(10000) });
    const answer = await response.json();
    if (answer.running) {
      const version = answer.version ? ` version ${answer.version}` : "";
      $("server").textContent = `Server at ${answer.server} (${answer.health}), model ${answer.model}${version}.`;
    } else {
      $("server").textContent = `Server at ${answer.server} is not answering.`;
      say(`TorchServe is not running at ${answer.server}. Start it with \`mnist-kit serve\`, then draw.`, "error");
    }
  } catch {
    $("server").textContent = "The pad's server (mnist-kit ui) is not answering.";
  }
}

paint();
pad.dataset.revision = "0";
answered(0);
setBars(null);
status();
