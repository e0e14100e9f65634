// The playground: a form generated from the chosen model's catalog entry as `/v1/models`
// serves it (its JSON Schema, limited to the parameters the model takes), the price of the
// request before it runs (`/v1/images/estimate`), the request as curl, Python or
// JavaScript, the run itself (plain or streamed), and the key's history (`/v1/generations`).

import {
  ApiError, authHeaders, copyText, el, errorBanner, failure, getJson, mountKeyBar, when,
} from "/ui/common.js";

const $ = (id) => document.getElementById(id);
// Parameters placed first, in this order; the others follow in the schema's order.
const FIRST = ["size", "aspect_ratio", "image_size", "quality", "n", "seed", "output_format", "background"];
// Request fields every model takes that the form offers besides the model's own parameters.
const REQUEST_FIELDS = ["n", "response_format"];
const MIME = { png: "image/png", jpeg: "image/jpeg", jpg: "image/jpeg", webp: "image/webp", gif: "image/gif", svg: "image/svg+xml" };

let models = [];
let model = null;
let references = []; // {label, value}: a file id or a URL each
let mask = null;
let lang = "curl";
let estimateTimer = null;
let estimateSeq = 0;

// ---- Models and the form ----------------------------------------------------------------

async function loadModels() {
  try {
    models = (await getJson("/v1/models")).data.filter((m) => !m.shutdown_date);
  } catch (error) {
    models = [];
    model = null;
    $("model").replaceChildren();
    $("fields").replaceChildren();
    $("status").replaceChildren(errorBanner(error));
    return;
  }
  fillFilter("provider-filter", models.map((m) => m.provider));
  fillFilter("capability-filter", models.flatMap((m) => m.capabilities));
  showModels();
  $("status").replaceChildren(el("p", { class: "muted" }, "Pick a model, write a prompt and run."));
  loadHistory();
}

function fillFilter(id, values) {
  const select = $(id);
  const kept = select.value;
  const unique = [...new Set(values)].sort();
  select.replaceChildren(el("option", { value: "" }, "any"), ...unique.map((v) => el("option", { value: v }, v)));
  select.value = unique.includes(kept) ? kept : "";
}

function showModels() {
  const provider = $("provider-filter").value;
  const capability = $("capability-filter").value;
  const shown = models.filter((m) => (!provider || m.provider === provider)
    && (!capability || m.capabilities.includes(capability)));
  const select = $("model");
  const kept = select.value;
  select.replaceChildren(...shown.map((m) => el("option", { value: m.id }, `${m.id} · ${m.provider}`)));
  if (shown.some((m) => m.id === kept)) select.value = kept;
  selectModel();
}

function selectModel() {
  model = models.find((m) => m.id === $("model").value) || null;
  if (!model) {
    $("fields").replaceChildren();
    $("model-info").textContent = "No model matches the filters.";
    return;
  }
  const allowed = model.allowedParams;
  $("model-info").textContent = `${model.provider} · ${model.capabilities.join(", ")} · ${priceText(model.pricing)}`;
  const props = model.schema.properties || {};
  const takes = new Set(Object.keys(allowed.params || {}));
  const names = Object.keys(props)
    .filter((name) => name !== "prompt" && (takes.has(name) || REQUEST_FIELDS.includes(name)))
    .sort((a, b) => rank(a) - rank(b));
  $("fields").replaceChildren(...names.map((name) => field(name, props[name])));
  $("f-prompt").placeholder = props.prompt?.maxLength
    ? `a lighthouse at dusk (up to ${props.prompt.maxLength} characters)` : "a lighthouse at dusk";
  $("references").hidden = !(allowed.max_reference_images > 0);
  $("mask").hidden = !allowed.supports_mask;
  $("partials-field").hidden = !model.capabilities.includes("streaming");
  if ($("references").hidden) references = [];
  if ($("mask").hidden) mask = null;
  showAttachments();
  updateDerived();
}

function rank(name) {
  const at = FIRST.indexOf(name);
  return at < 0 ? FIRST.length : at;
}

function priceText(pricing) {
  if (!pricing) return "no price (unmetered keys only)";
  const parts = [`${pricing.per_image} credit${pricing.per_image === 1 ? "" : "s"} per image`];
  if (pricing.by_quality) parts.push(`by quality ${Object.entries(pricing.by_quality).map(([q, c]) => `${q} ${c}`).join(", ")}`);
  if (pricing.by_resolution) parts.push(`by tier ${Object.entries(pricing.by_resolution).map(([t, c]) => `${t} ${c}`).join(", ")}`);
  if (pricing.scale_by_area) parts.push("scaled by area");
  return parts.join("; ");
}

/** One control of the form for parameter `name`, from its JSON Schema. */
function field(name, schema) {
  const id = `f-${name}`;
  const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== "null") : schema.type;
  const fallback = schema.default ?? model.allowedParams.defaults?.[name];
  const unset = fallback !== undefined ? `default (${fallback})` : "—";
  let control;
  let extra = null;
  if (Array.isArray(schema.enum)) {
    control = el("select", { id, name }, el("option", { value: "" }, unset),
      schema.enum.map((v) => el("option", { value: String(v) }, String(v))));
  } else if (type === "boolean") {
    control = el("select", { id, name, "data-type": "boolean" }, el("option", { value: "" }, unset),
      el("option", { value: "true" }, "true"), el("option", { value: "false" }, "false"));
  } else if (type === "integer" || type === "number") {
    control = el("input", {
      id, name, type: "number", "data-type": type, min: schema.minimum, max: schema.maximum,
      step: type === "integer" ? 1 : "any", placeholder: fallback !== undefined ? `default ${fallback}` : "",
    });
  } else if (type === "string") {
    const list = schema.examples ? `${id}-choices` : undefined;
    control = el("input", { id, name, type: "text", list, maxlength: schema.maxLength, placeholder: fallback !== undefined ? `default ${fallback}` : "" });
    if (list) extra = el("datalist", { id: list }, schema.examples.map((v) => el("option", { value: v })));
  } else {
    control = el("textarea", { id, name, rows: 2, "data-type": "json", placeholder: "JSON" });
  }
  return el("div", { class: "field", "data-param": name },
    el("label", { for: id, title: schema.description || "" }, name),
    control, extra, hint(schema, type), el("div", { class: "field-error", hidden: true }));
}

function hint(schema, type) {
  let text = "";
  if (schema.minimum !== undefined || schema.maximum !== undefined) {
    text = `${schema.minimum ?? "…"} to ${schema.maximum ?? "…"}`;
  } else if (schema.examples) {
    text = `WxH, or one of the list`;
  } else if (type === "string" && schema.maxLength) {
    text = `up to ${schema.maxLength} characters`;
  }
  return text ? el("div", { class: "hint" }, text) : null;
}

// ---- The request ------------------------------------------------------------------------

/** The request the form describes: path, extra headers and JSON body. */
function buildRequest() {
  const body = { model: model.id };
  const prompt = $("f-prompt").value;
  if (prompt) body.prompt = prompt;
  for (const control of $("fields").querySelectorAll("[name]")) {
    const raw = control.value.trim();
    if (raw !== "") body[control.name] = typed(control.dataset.type, raw);
  }
  if (references.length) body.images = references.map((r) => r.value);
  if (mask) body.mask = mask.value;
  if ($("stream-toggle").checked) {
    body.stream = true;
    const partials = $("f-partial_images").value.trim();
    if (partials !== "" && !$("partials-field").hidden) body.partial_images = Number(partials);
  }
  const headers = { "Content-Type": "application/json" };
  if ($("skip-cache").checked) headers["Cache-Control"] = "no-cache";
  // A mask is an edit: OpenAI's edits endpoint takes it (with the images, as JSON here).
  const path = mask ? "/v1/images/edits" : "/v1/images/generations";
  return { path, headers, body };
}

function typed(type, raw) {
  if (type === "integer" || type === "number") {
    const number = Number(raw);
    return Number.isFinite(number) ? number : raw;
  }
  if (type === "boolean") return raw === "true";
  if (type === "json") {
    try { return JSON.parse(raw); } catch { return raw; }
  }
  return raw;
}

function updateDerived() {
  if (!model) return;
  $("snippet").textContent = snippet(buildRequest());
  clearTimeout(estimateTimer);
  estimateTimer = setTimeout(estimate, 250);
}

/** The price of the request as the form stands, and its refusal next to the field. */
async function estimate() {
  const seq = ++estimateSeq;
  const body = buildRequest().body;
  // The price does not depend on the prompt: an empty one still gets a price.
  body.prompt = body.prompt || "a prompt";
  delete body.stream;
  delete body.partial_images;
  try {
    const answer = await getJson("/v1/images/estimate", { method: "POST", json: body });
    if (seq !== estimateSeq) return;
    clearErrors();
    const basis = [answer.quality && `quality ${answer.quality}`, answer.tier && `tier ${answer.tier}`].filter(Boolean).join(", ");
    $("estimate").textContent = answer.credits === null
      ? "This model has no price: only unmetered keys may use it."
      : `Estimated cost: ${answer.credits} credit${answer.credits === 1 ? "" : "s"} (${answer.n} × ${answer.credits_per_image}${basis ? `, ${basis}` : ""}; a cache hit is free)`;
  } catch (error) {
    if (seq !== estimateSeq) return;
    $("estimate").textContent = "";
    clearErrors();
    if (!(error instanceof ApiError && error.param && markField(error.param, error.message))) {
      $("estimate").textContent = `No estimate: ${error.message}`;
    }
  }
}

// ---- Copy as curl, Python, JavaScript ---------------------------------------------------

function snippet({ path, headers, body }) {
  const url = location.origin + path;
  const extra = Object.entries(headers).filter(([name]) => name !== "Content-Type");
  const json = JSON.stringify(body, null, 2);
  if (lang === "curl") {
    return [`curl -sS ${body.stream ? "-N " : ""}${url}`, `-H "Authorization: Bearer $IMGPROXY_API_KEY"`,
      `-H "Content-Type: application/json"`, ...extra.map(([n, v]) => `-H "${n}: ${v}"`),
      `-d '${json.replaceAll("'", "'\\''")}'`].join(" \\\n  ");
  }
  if (lang === "python") {
    const pyHeaders = [`"Authorization": f"Bearer {os.environ['IMGPROXY_API_KEY']}"`, ...extra.map(([n, v]) => `${JSON.stringify(n)}: ${JSON.stringify(v)}`)];
    return ["import os", "", "import requests", "", "response = requests.post(", `    ${JSON.stringify(url)},`,
      `    headers={${pyHeaders.join(", ")}},`, `    json=${py(body, 4)},`, body.stream ? "    stream=True," : null, ")",
      "response.raise_for_status()",
      body.stream ? "for line in response.iter_lines():\n    print(line.decode())" : "print(response.json())"]
      .filter((line) => line !== null).join("\n");
  }
  const jsHeaders = ["Authorization: `Bearer ${process.env.IMGPROXY_API_KEY}`", `"Content-Type": "application/json"`,
    ...extra.map(([n, v]) => `${JSON.stringify(n)}: ${JSON.stringify(v)}`)];
  return [`const response = await fetch(${JSON.stringify(url)}, {`, `  method: "POST",`,
    `  headers: {\n${jsHeaders.map((h) => `    ${h},`).join("\n")}\n  },`,
    `  body: JSON.stringify(${json.replaceAll("\n", "\n  ")}),`, "});",
    "if (!response.ok) throw new Error(await response.text());",
    body.stream ? "for await (const chunk of response.body) process.stdout.write(chunk);" : "console.log(await response.json());"].join("\n");
}

/** `value` as a Python literal. */
function py(value, indent) {
  const pad = " ".repeat(indent);
  if (value === null) return "None";
  if (value === true || value === false) return value ? "True" : "False";
  if (typeof value !== "object") return JSON.stringify(value);
  const items = Array.isArray(value)
    ? value.map((v) => py(v, indent + 4))
    : Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${py(v, indent + 4)}`);
  const [open, close] = Array.isArray(value) ? ["[", "]"] : ["{", "}"];
  return items.length ? `${open}\n${items.map((i) => `${pad}    ${i},`).join("\n")}\n${pad}${close}` : `${open}${close}`;
}

// ---- Running it -------------------------------------------------------------------------

async function run(event) {
  event.preventDefault();
  if (!model) return;
  const request = buildRequest();
  clearErrors();
  $("run").disabled = true;
  $("result-images").replaceChildren();
  $("stream-log").replaceChildren();
  $("result-meta").hidden = true;
  $("status").replaceChildren(el("p", { class: "muted" }, request.body.stream ? "Streaming…" : "Generating…"));
  const started = performance.now();
  try {
    const response = await fetch(request.path, {
      method: "POST", headers: authHeaders(request.headers), body: JSON.stringify(request.body),
    });
    if (!response.ok) throw await failure(response);
    const outcome = request.body.stream ? await readStream(response) : await readJson(response);
    showMeta(response, outcome, request.body, performance.now() - started);
    $("status").replaceChildren();
  } catch (error) {
    $("status").replaceChildren(errorBanner(error));
    if (error instanceof ApiError && error.param) markField(error.param, error.message);
  } finally {
    $("run").disabled = false;
    // How many runs have ended: what a test (or a script) driving the page waits for.
    $("run").dataset.done = String(Number($("run").dataset.done || 0) + 1);
    loadHistory();
  }
}

async function readJson(response) {
  const body = await response.json();
  body.data.forEach((image, index) => {
    placeImage(index, image.url || dataUrl(image.b64_json, body.output_format), false);
  });
  return { meta: body, credits: body.credits_used, count: body.data.length, model: body.model };
}

/** Reads OpenAI's image events as they come: partial images take the place of the image
 *  being made until it completes. */
async function readStream(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let completed = 0;
  let last = {};
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = parseEvent(buffer.slice(0, cut));
      buffer = buffer.slice(cut + 2);
      if (!event) continue;
      if (event.data.error) throw new ApiError(0, event.data.error, response.headers.get("x-request-id"));
      if (event.name.endsWith(".partial_image")) {
        log(`partial image ${event.data.partial_image_index + 1} of image ${completed + 1}`);
        placeImage(completed, dataUrl(event.data.b64_json, event.data.output_format), true);
      } else if (event.name.endsWith(".completed")) {
        log(`image ${completed + 1} completed`);
        placeImage(completed, dataUrl(event.data.b64_json, event.data.output_format), false);
        completed += 1;
        last = event.data;
      }
    }
  }
  return { meta: last, credits: last.credits_used, count: completed, model: null };
}

/** One Server-Sent Event block; `null` for a comment (keep-alive). */
function parseEvent(block) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
  }
  if (!data.length) return null;
  try {
    return { name, data: JSON.parse(data.join("\n")) };
  } catch {
    return null;
  }
}

function dataUrl(b64, format) {
  return `data:${MIME[format] || "image/png"};base64,${b64}`;
}

function log(text) {
  $("stream-log").append(el("li", {}, text));
}

/** Shows image `index` (a partial one in its place until it completes). */
function placeImage(index, src, partial) {
  const box = $("result-images");
  let figure = box.querySelector(`figure[data-index="${index}"]`);
  if (!figure) {
    figure = el("figure", { "data-index": index }, el("img", { alt: `image ${index + 1}` }), el("figcaption", {}, "…"));
    box.append(figure);
  }
  figure.classList.toggle("partial", partial);
  const image = figure.querySelector("img");
  image.classList.toggle("partial", partial);
  image.onload = () => {
    figure.querySelector("figcaption").textContent = `${image.naturalWidth}×${image.naturalHeight}${partial ? " · partial" : ""}`;
  };
  image.src = src;
}

function showMeta(response, outcome, body, elapsed) {
  const headers = response.headers;
  const credits = outcome.credits ?? null;
  const rows = [
    ["model", outcome.model || headers.get("x-model") || body.model],
    ["images", String(outcome.count)],
    ["size", outcome.meta.size || "—"],
    ["seed", body.seed !== undefined ? String(body.seed) : "— (none sent)"],
    ["cost", credits === null ? "not metered" : `${credits} credit${credits === 1 ? "" : "s"}`],
    ["balance", headers.get("x-credits-remaining") ?? "—"],
    ["latency", `${Math.round(elapsed)} ms`],
    ["cache", headers.get("x-cache-status") || (body.stream ? "— (streamed)" : "—")],
    ["request id", headers.get("x-request-id") || "—"],
  ];
  $("result-meta").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { "data-k": k, class: k === "request id" ? "mono" : "" }, v)]));
  $("result-meta").hidden = false;
}

// ---- Errors next to their field ---------------------------------------------------------

/** Shows `message` next to the form's control for `param` (`images[0]` is `images`);
 *  false when the form has none. */
function markField(param, message) {
  let name = param.split(/[.[]/)[0];
  if (name === "image") name = "images";
  const field = document.querySelector(`#params [data-param="${CSS.escape(name)}"]`);
  if (!field || field.hidden || field.closest("[hidden]")) return false;
  field.classList.add("invalid");
  const slot = field.querySelector(".field-error");
  slot.textContent = message;
  slot.hidden = false;
  return true;
}

function clearErrors() {
  for (const field of document.querySelectorAll("#params [data-param]")) {
    field.classList.remove("invalid");
    const slot = field.querySelector(".field-error");
    if (slot) { slot.hidden = true; slot.textContent = ""; }
  }
}

// ---- Reference images and the mask ------------------------------------------------------

async function upload(file) {
  const form = new FormData();
  form.append("purpose", "vision");
  form.append("file", file);
  const answer = await getJson("/v1/files", { method: "POST", body: form });
  return { label: `${file.name} · ${answer.id}`, value: answer.id };
}

async function addFiles(files, target) {
  clearErrors();
  try {
    for (const file of files) {
      const item = await upload(file);
      if (target === "mask") mask = item; else references.push(item);
    }
  } catch (error) {
    markField(target === "mask" ? "mask" : "images", error.message);
  }
  showAttachments();
  updateDerived();
}

function showAttachments() {
  const chip = (item, remove) => el("span", { class: "chip" }, el("span", { title: item.value }, item.label),
    el("button", { type: "button", "aria-label": `remove ${item.label}`, onclick: remove }, "×"));
  $("reference-list").replaceChildren(...references.map((item, i) => chip(item, () => {
    references.splice(i, 1);
    showAttachments();
    updateDerived();
  })));
  $("mask-list").replaceChildren(...(mask ? [chip(mask, () => { mask = null; showAttachments(); updateDerived(); })] : []));
}

// ---- History ----------------------------------------------------------------------------

async function loadHistory() {
  const box = $("history");
  try {
    const page = await getJson("/v1/generations?limit=12");
    if (!page.data.length) {
      box.replaceChildren(el("p", { class: "muted" }, "No generations charged to this key yet."));
      return;
    }
    const cell = (text, cls) => el("td", { class: cls }, text ?? "—");
    box.replaceChildren(el("div", { class: "table-wrap" }, el("table", {},
      el("thead", {}, el("tr", {}, ["When", "Model", "Credits", "Request id", "Images"].map((h) => el("th", { class: h === "Credits" ? "num" : "" }, h)))),
      el("tbody", {}, page.data.map((g) => el("tr", { "data-id": g.id },
        cell(when(g.created_at), "when"), cell(g.model), cell(String(g.credits_used), "num"), cell(g.request_id, "mono"),
        el("td", {}, el("div", { class: "thumbs" }, g.images.map((src) => el("img", { src, alt: "", loading: "lazy" }))))))))));
  } catch (error) {
    box.replaceChildren(el("p", { class: "muted" }, error.status === 403
      ? "The history lists the charges of issued keys; this key is not metered (the master key, or an open server)."
      : `No history: ${error.message}`));
  }
}

// ---- Wiring -----------------------------------------------------------------------------

$("provider-filter").addEventListener("change", showModels);
$("capability-filter").addEventListener("change", showModels);
$("model").addEventListener("change", selectModel);
$("params").addEventListener("input", updateDerived);
$("params").addEventListener("change", updateDerived);
$("params").addEventListener("submit", run);
$("reference-file").addEventListener("change", (e) => addFiles([...e.target.files], "images").then(() => { e.target.value = ""; }));
$("mask-file").addEventListener("change", (e) => addFiles([...e.target.files].slice(0, 1), "mask").then(() => { e.target.value = ""; }));
$("reference-add").addEventListener("click", () => {
  const value = $("reference-url").value.trim();
  if (value) references.push({ label: value, value });
  $("reference-url").value = "";
  showAttachments();
  updateDerived();
});
$("mask-add").addEventListener("click", () => {
  const value = $("mask-url").value.trim();
  mask = value ? { label: value, value } : null;
  $("mask-url").value = "";
  showAttachments();
  updateDerived();
});
for (const tab of document.querySelectorAll("[data-lang]")) {
  tab.addEventListener("click", () => {
    lang = tab.dataset.lang;
    for (const other of document.querySelectorAll("[data-lang]")) other.setAttribute("aria-selected", String(other === tab));
    updateDerived();
  });
}
$("copy").addEventListener("click", async () => {
  const done = await copyText($("snippet").textContent, $("snippet"));
  $("copy").textContent = done ? "Copied" : "Select and copy";
  setTimeout(() => { $("copy").textContent = "Copy"; }, 1500);
});
$("history-refresh").addEventListener("click", loadHistory);
mountKeyBar(loadModels);
