// The pixelwise page: send an image to /predict?format=layers, draw the image with the
// colour mask over it at the slider's opacity, list the classes with their areas, and offer
// the index mask for download. No build step and nothing loaded from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { image: null, color: null };

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the browser could not draw the answer"));
    img.src = src;
  });
}

function draw() {
  if (!state.image) return;
  const canvas = $("view");
  canvas.width = state.image.width;
  canvas.height = state.image.height;
  const ctx = canvas.getContext("2d");
  ctx.globalAlpha = 1;
  ctx.drawImage(state.image, 0, 0);
  ctx.globalAlpha = Number($("opacity").value) / 100;
  ctx.drawImage(state.color, 0, 0);
  canvas.dataset.drawn = String(Date.now());
}

function legend(classes) {
  const list = $("legend");
  list.replaceChildren();
  for (const c of classes) {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${c.color.join(",")})`;
    const label = document.createElement("span");
    label.textContent = `${c.name}: ${(100 * c.fraction).toFixed(1)} %`;
    item.append(swatch, label);
    list.append(item);
  }
}

async function predict(file) {
  setStatus(`predicting ${file.name}…`);
  const form = new FormData();
  form.append("image", file);
  let answer;
  try {
    const response = await fetch("predict?format=layers", { method: "POST", body: form });
    if (!response.ok) {
      setStatus(`${response.status}: ${(await response.text()).trim()}`, true);
      return;
    }
    answer = await response.json();
    [state.image, state.color] = await Promise.all([
      loadImage(`data:image/png;base64,${answer.image}`),
      loadImage(`data:image/png;base64,${answer.color}`),
    ]);
  } catch (error) {
    setStatus(String(error.message || error), true);
    return;
  }
  $("result").hidden = false;
  draw();
  legend(answer.classes);
  const link = $("download");
  link.href = `data:image/png;base64,${answer.mask}`;
  link.download = `${file.name.replace(/\.[^.]*$/, "")}_mask.png`;
  link.hidden = false;
  setStatus(`${file.name}: ${answer.width} × ${answer.height} pixels`);
}

async function describe() {
  try {
    const model = await (await fetch("model")).json();
    const name = model.model || model.model_name || "model";
    $("model").textContent =
      `${name}, ${model.num_classes} classes (${model.class_names.join(", ")}), ` +
      `${model.in_channels} input channel(s)`;
  } catch (error) {
    $("model").textContent = "the model's description is unavailable";
  }
}

$("file").addEventListener("change", (e) => e.target.files[0] && predict(e.target.files[0]));
$("opacity").addEventListener("input", draw);
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files[0]) predict(e.dataTransfer.files[0]);
});
describe();
