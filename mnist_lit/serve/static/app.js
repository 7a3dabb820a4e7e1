// The page of `python -m mnist_lit serve`: draw (mouse, pen or touch through pointer events) or upload a
// picture, POST it to /predict, show the digit, the 10 probabilities and the 28x28 image the model saw.
"use strict";

// White ink on black, as MNIST. A 20 px pen on the 280 px canvas is ~10% of a digit drawn ~200 px tall,
// the stroke width of MNIST digits (2-3 px in their 20 px box).
const PEN_WIDTH = 20;

const canvas = document.getElementById("canvas");
const ctx = canvas.getContext("2d");
const $ = (id) => document.getElementById(id);
let drawing = null; // {x, y} of the last point while a pointer is down

function clearCanvas() {
  ctx.save();
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.restore();
}

function canvasPoint(event) {
  // CSS pixels -> canvas pixels (the canvas may be displayed at another size)
  const box = canvas.getBoundingClientRect();
  return {x: (event.clientX - box.left) * canvas.width / box.width,
          y: (event.clientY - box.top) * canvas.height / box.height};
}

function dot(p) {
  ctx.beginPath();
  ctx.arc(p.x, p.y, PEN_WIDTH / 2, 0, 2 * Math.PI);
  ctx.fill();
}

function line(from, to) {
  ctx.beginPath();
  ctx.moveTo(from.x, from.y);
  ctx.lineTo(to.x, to.y);
  ctx.stroke();
}

canvas.addEventListener("pointerdown", (event) => {
  if (event.button !== 0) return;
  event.preventDefault();
  canvas.setPointerCapture(event.pointerId);
  drawing = canvasPoint(event);
  dot(drawing);
});

canvas.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  event.preventDefault();
  // coalesced events: every point the device reported since the last frame, for smooth fast strokes
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  for (const e of (events.length ? events : [event])) {
    const p = canvasPoint(e);
    line(drawing, p);
    drawing = p;
  }
});

for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) {
  canvas.addEventListener(type, () => { drawing = null; });
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function buildBars() {
  const bars = $("bars");
  for (let digit = 0; digit < 10; digit++) {
    const item = document.createElement("li");
    item.innerHTML = `<span>${digit}</span><span class="track"><span class="fill"></span></span>` +
                     `<span class="value"></span>`;
    bars.appendChild(item);
  }
}

function showBoxes(result) {
  // a whole number: each digit's box (picture pixels) and what was read in it
  const boxes = $("boxes");
  boxes.textContent = result.digits.length > 1 ? result.boxes.map((b, i) =>
    `${result.digits[i]} at (${b[0]}, ${b[1]})-(${b[2]}, ${b[3]}), ` +
    `${(100 * result.digit_confidences[i]).toFixed(1)}%`).join("; ") : "";
}

function showResult(result, source) {
  $("digit").textContent = result.digits;
  $("source").textContent = `from ${source}`;
  $("confidence").textContent = `${(100 * result.confidence).toFixed(1)}% sure`;
  $("seen").src = `data:image/png;base64,${result.image_png_base64 || result.crops_png_base64[0]}`;
  showBoxes(result);
  $("bars").querySelectorAll("li").forEach((item, digit) => {
    const p = result.probabilities ? result.probabilities[digit] : 0;
    item.classList.toggle("top", digit === result.digit);
    item.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
    item.querySelector(".value").textContent = `${(100 * p).toFixed(1)}%`;
  });
}

function resetResult() {
  $("digit").textContent = "\u2013";
  $("confidence").textContent = "";
  $("source").textContent = "";
  $("seen").removeAttribute("src");
  $("boxes").textContent = "";
  $("bars").querySelectorAll("li").forEach((item) => {
    item.classList.remove("top");
    item.querySelector(".fill").style.width = "0";
    item.querySelector(".value").textContent = "";
  });
}

async function send(body, headers, source) {
  // POST a picture; body.dataset.state/requests let people (and the browser test) see when it is done
  document.body.dataset.state = "busy";
  $("predict").disabled = true;
  showError("");
  try {
    const response = await fetch("/predict", {method: "POST", body, headers});
    const result = await response.json().catch(() => ({error: `HTTP ${response.status}`}));
    if (!response.ok) throw new Error(result.error || `HTTP ${response.status}`);
    showResult(result, source);
    document.body.dataset.state = "done";
  } catch (error) {
    resetResult();
    showError(error.message);
    document.body.dataset.state = "error";
  } finally {
    $("predict").disabled = false;
    document.body.dataset.requests = String(Number(document.body.dataset.requests) + 1);
  }
}

$("predict").addEventListener("click", () => {
  canvas.toBlob((blob) => send(blob, {"Content-Type": "image/png"}, "your drawing"), "image/png");
});

$("clear").addEventListener("click", () => {
  clearCanvas();
  resetResult();
  showError("");
});

$("upload").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (!file) return;
  const form = new FormData();
  form.append("file", file);
  send(form, {}, file.name);
  event.target.value = ""; // choosing the same file again fires another change
});

fetch("/health").then((r) => r.json()).then((health) => {
  const name = health.checkpoint.split(/[\\/]/).pop();
  $("model").textContent = `Model: ${name} (epoch ${health.epoch}, pixel scale ${health.pixel_scale})`;
  $("model").title = health.checkpoint;
}).catch(() => { $("model").textContent = "Model: server not reachable"; });

ctx.fillStyle = "#fff"; // ink: dots are filled, lines stroked
ctx.strokeStyle = "#fff";
ctx.lineWidth = PEN_WIDTH;
ctx.lineCap = "round";
ctx.lineJoin = "round";
buildBars();
clearCanvas();
