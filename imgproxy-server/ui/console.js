// The operator console, for the master key: the overview (database counts and this
// instance's counters, polled), keys (issue, credit, revoke), the ledger with the images
// each charge paid for, tasks and webhook deliveries. Every datum comes from the admin API.

import { ApiError, el, errorBanner, getJson, mountKeyBar, when } from "/ui/common.js";

const $ = (id) => document.getElementById(id);
const POLL_MS = 3000;
const PAGE = 50;

let view = "keys";
let keys = [];
let previous = null; // the last summary's counters and when they were read, for rates
let poll = null;
let ledgerBefore = null;

// ---- Overview ---------------------------------------------------------------------------

async function start() {
  clearInterval(poll);
  previous = null;
  $("status").replaceChildren();
  if (!(await loadSummary())) return;
  await loadKeys();
  loadView();
  poll = setInterval(() => { if (!document.hidden) loadSummary(); }, POLL_MS);
}

function stop(error) {
  clearInterval(poll);
  $("cards").replaceChildren();
  const banner = errorBanner(error);
  if (error.status === 401 || error.status === 403) {
    banner.append(el("div", {}, "The console needs the master key (IMGPROXY_MASTER_KEY): type it in the bar above."));
  }
  $("status").replaceChildren(banner);
}

async function loadSummary() {
  let summary;
  try {
    summary = await getJson("/v1/admin/summary");
  } catch (error) {
    stop(error);
    return false;
  }
  const now = performance.now();
  const counters = summary.instance;
  const rate = (name) => {
    if (!previous || !counters || !previous.counters) return null;
    const seconds = (now - previous.at) / 1000;
    return seconds > 0 ? (counters[name] - previous.counters[name]) / seconds : null;
  };
  const tasks = summary.tasks;
  const hooks = summary.webhooks;
  const cards = [
    ["active_keys", "keys active", summary.active_keys, `${summary.revoked_keys} revoked`],
    ["balance", "credits held by active keys", summary.balance],
    ["tasks", "tasks queued / running", `${tasks.queued || 0} / ${tasks.processing || 0}`, `${tasks.succeeded || 0} succeeded · ${tasks.failed || 0} failed`],
    ["webhooks", "webhooks pending", hooks.pending || 0, `${hooks.delivered || 0} delivered · ${hooks.failed || 0} failed`],
  ];
  if (counters) {
    const requests = rate("requests");
    const lookups = counters.cache_hits + counters.cache_misses;
    cards.push(
      ["requests", "requests", count(counters.requests), requests === null ? "" : `${requests.toFixed(2)} per second`],
      ["errors", "error answers", count(counters.errors), `${count(counters.server_errors)} were 5xx`],
      ["images", "images generated", count(counters.images_generated)],
      ["credits", "credits charged", count(counters.credits_charged)],
      ["cache", "cache hit ratio", lookups ? `${Math.round((100 * counters.cache_hits) / lookups)}%` : "—", `${count(counters.cache_hits)} hits · ${count(counters.cache_misses)} misses`],
      ["in_flight", "generations in flight", count(counters.generations_in_flight)],
    );
  }
  $("cards").replaceChildren(...cards.map(([id, label, value, detail]) => el("div", { class: "card", "data-metric": id },
    el("div", { class: "value" }, String(value)), el("div", { class: "label" }, label), detail ? el("div", { class: "hint" }, detail) : null)));
  $("updated").textContent = counters
    ? `updated ${new Date().toLocaleTimeString()} · request counters are this instance's since it started`
    : `updated ${new Date().toLocaleTimeString()} · metrics are off: no instance counters`;
  previous = { at: now, counters };
  return true;
}

function count(value) {
  return Number.isInteger(value) ? value.toLocaleString() : value.toFixed(1);
}

// ---- Keys -------------------------------------------------------------------------------

async function loadKeys() {
  try {
    keys = (await getJson("/v1/admin/keys")).data;
  } catch (error) {
    $("status").replaceChildren(errorBanner(error));
    return;
  }
  const limit = (value) => (value === null || value === undefined ? "∞" : String(value));
  $("keys-table").replaceChildren(
    head(["Name", "Id", "Balance", "rpm / img/min / at once", "Models", "Created", "State", ""]),
    el("tbody", {}, keys.map((key) => el("tr", { "data-key": key.id },
      el("td", {}, key.name), el("td", { class: "mono" }, key.id), el("td", { class: "num" }, String(key.balance)),
      el("td", {}, `${limit(key.rpm)} / ${limit(key.images_per_minute)} / ${limit(key.max_concurrent)}`),
      el("td", {}, key.models ? key.models.join(", ") : "every model"), el("td", {}, when(key.created_at)),
      el("td", {}, el("span", { class: `status ${key.revoked ? "bad" : "good"}` }, key.revoked ? "revoked" : "active")),
      el("td", {}, key.revoked ? null : keyActions(key))))));
  const select = $("ledger-key");
  const kept = select.value;
  select.replaceChildren(el("option", { value: "" }, "every key"), ...keys.map((k) => el("option", { value: k.id }, `${k.name} · ${k.id}`)));
  select.value = keys.some((k) => k.id === kept) ? kept : "";
}

function keyActions(key) {
  const amount = el("input", { type: "number", min: 1, step: 1, placeholder: "credits", "aria-label": `credits for ${key.name}`, class: "credit-amount" });
  const credit = el("button", { type: "button", class: "credit" }, "Credit");
  credit.addEventListener("click", () => act(`/v1/admin/keys/${encodeURIComponent(key.id)}/credit`, { amount: Number(amount.value) }));
  // Two steps, so that one stray click revokes nothing.
  const revoke = el("button", { type: "button", class: "danger revoke" }, "Revoke");
  revoke.addEventListener("click", () => {
    if (revoke.dataset.armed) act(`/v1/admin/keys/${encodeURIComponent(key.id)}/revoke`);
    else { revoke.dataset.armed = "yes"; revoke.textContent = "Confirm revoke"; }
  });
  return el("div", { class: "row" }, amount, credit, revoke);
}

async function act(path, json) {
  try {
    await getJson(path, { method: "POST", json: json ?? {} });
    $("status").replaceChildren();
  } catch (error) {
    $("status").replaceChildren(errorBanner(error));
  }
  await loadKeys();
  loadSummary();
}

async function createKey(event) {
  event.preventDefault();
  const form = $("new-key");
  for (const field of form.querySelectorAll(".field")) {
    field.classList.remove("invalid");
    field.querySelector(".field-error").hidden = true;
  }
  const value = (name) => form.elements[name].value.trim();
  const body = { name: value("name") };
  for (const name of ["credits", "rpm", "images_per_minute", "max_concurrent"]) {
    if (value(name) !== "") body[name] = Number(value(name));
  }
  if (value("models")) body.models = value("models").split(",").map((m) => m.trim()).filter(Boolean);
  try {
    const created = await getJson("/v1/admin/keys", { method: "POST", json: body });
    $("created").replaceChildren(el("strong", {}, `Key “${created.key.name}” created with ${created.key.balance} credits. Its secret, shown this once:`),
      el("div", { class: "mono", id: "created-secret" }, created.secret));
    $("created").hidden = false;
    form.reset();
  } catch (error) {
    const field = error instanceof ApiError && error.param && form.querySelector(`[data-param="${CSS.escape(error.param)}"]`);
    if (field) {
      field.classList.add("invalid");
      const slot = field.querySelector(".field-error");
      slot.textContent = error.message;
      slot.hidden = false;
    } else {
      $("status").replaceChildren(errorBanner(error));
    }
    return;
  }
  await loadKeys();
  loadSummary();
}

// ---- Ledger, tasks, webhooks ------------------------------------------------------------

function head(names) {
  return el("thead", {}, el("tr", {}, names.map((n) => el("th", { class: ["Balance", "Amount", "After", "Credits", "Attempts"].includes(n) ? "num" : "" }, n))));
}

function keyName(id) {
  const key = keys.find((k) => k.id === id);
  return key ? key.name : id;
}

async function loadLedger(older) {
  const query = new URLSearchParams({ limit: PAGE });
  if ($("ledger-key").value) query.set("key_id", $("ledger-key").value);
  if ($("ledger-kind").value) query.set("kind", $("ledger-kind").value);
  if (older && ledgerBefore !== null) query.set("before", ledgerBefore);
  let page;
  try {
    page = await getJson(`/v1/admin/ledger?${query}`);
  } catch (error) {
    $("status").replaceChildren(errorBanner(error));
    return;
  }
  const rows = page.data.map((row) => el("tr", { "data-kind": row.kind, "data-request": row.request_id || "" },
    el("td", { class: "when" }, when(row.created_at)), el("td", { title: row.key_id }, keyName(row.key_id)),
    el("td", {}, el("span", { class: "status" }, row.kind)), el("td", { class: "mono" }, row.request_id || "—"),
    el("td", {}, row.model || "—"), el("td", { class: "num" }, signed(row.amount)), el("td", { class: "num" }, String(row.balance_after)),
    el("td", {}, detail(row)),
    el("td", {}, el("div", { class: "thumbs" }, row.images.map((src) => el("img", { src, alt: "", loading: "lazy" }))))));
  if (older) {
    $("ledger-table").querySelector("tbody").append(...rows);
  } else {
    $("ledger-table").replaceChildren(head(["When", "Key", "Kind", "Request id", "Model", "Amount", "After", "Detail", "Images"]), el("tbody", {}, rows));
  }
  ledgerBefore = page.data.length ? page.data[page.data.length - 1].id : ledgerBefore;
  $("ledger-older").hidden = page.data.length < PAGE;
}

function signed(amount) {
  return amount > 0 ? `+${amount}` : String(amount);
}

/** What a ledger row's inputs say, in a few words. */
function detail(row) {
  const inputs = row.inputs || {};
  if (row.kind === "settle") return `kept ${inputs.kept} of ${inputs.reserved}${inputs.surface ? ` · ${inputs.surface}` : ""}`;
  if (row.kind === "reserve") return `${inputs.n ?? "?"} × ${inputs.credits_per_image ?? "?"}${inputs.quality ? ` · ${inputs.quality}` : ""}${inputs.tier ? ` · ${inputs.tier}` : ""}`;
  if (row.kind === "refund") return inputs.released ? "released (its instance died)" : "refunded";
  return "";
}

async function loadTasks() {
  const status = $("task-status").value;
  let page;
  try {
    page = await getJson(`/v1/admin/tasks?limit=${PAGE}${status ? `&status=${status}` : ""}`);
  } catch (error) {
    $("status").replaceChildren(errorBanner(error));
    return;
  }
  $("tasks-table").replaceChildren(head(["Created", "Task", "Key", "Kind", "Model", "Status", "Credits", "Error", "Webhook", "Finished"]),
    el("tbody", {}, page.data.map((task) => el("tr", { "data-status": task.status },
      el("td", { class: "when" }, when(task.created_at)), el("td", { class: "mono" }, task.id), el("td", {}, task.key_id ? keyName(task.key_id) : "operator"),
      el("td", {}, task.kind), el("td", {}, task.model), el("td", {}, el("span", { class: `status ${stateClass(task.status)}` }, task.status)),
      el("td", { class: "num" }, task.credits_used ?? "—"), el("td", {}, task.error ? task.error.message : ""),
      el("td", { class: "mono" }, task.callback_url || "—"), el("td", {}, when(task.finished_at))))));
}

async function loadWebhooks() {
  const status = $("webhook-status").value;
  let page;
  try {
    page = await getJson(`/v1/admin/webhooks?limit=${PAGE}${status ? `&status=${status}` : ""}`);
  } catch (error) {
    $("status").replaceChildren(errorBanner(error));
    return;
  }
  $("webhooks-table").replaceChildren(head(["Task ended", "Task", "Receiver", "Status", "Attempts", "Last error", "Finished"]),
    el("tbody", {}, page.data.map((d) => el("tr", { "data-status": d.status },
      el("td", { class: "when" }, when(d.created_at)), el("td", { class: "mono" }, d.task_id), el("td", { class: "mono" }, d.url),
      el("td", {}, el("span", { class: `status ${stateClass(d.status)}` }, d.status)), el("td", { class: "num" }, String(d.attempts)),
      el("td", {}, d.last_error || ""), el("td", {}, when(d.finished_at))))));
}

function stateClass(status) {
  if (["succeeded", "delivered"].includes(status)) return "good";
  if (["failed", "canceled"].includes(status)) return "bad";
  return "";
}

function loadView() {
  if (view === "keys") loadKeys();
  if (view === "ledger") loadLedger(false);
  if (view === "tasks") loadTasks();
  if (view === "webhooks") loadWebhooks();
}

// ---- Wiring -----------------------------------------------------------------------------

for (const tab of document.querySelectorAll("[data-view]")) {
  tab.addEventListener("click", () => {
    view = tab.dataset.view;
    for (const other of document.querySelectorAll("[data-view]")) {
      other.setAttribute("aria-selected", String(other === tab));
      $(`view-${other.dataset.view}`).hidden = other !== tab;
    }
    loadView();
  });
}
$("new-key").addEventListener("submit", createKey);
$("ledger-refresh").addEventListener("click", () => loadLedger(false));
$("ledger-key").addEventListener("change", () => loadLedger(false));
$("ledger-kind").addEventListener("change", () => loadLedger(false));
$("ledger-older").addEventListener("click", () => loadLedger(true));
$("task-status").addEventListener("change", loadTasks);
$("tasks-refresh").addEventListener("click", loadTasks);
$("webhook-status").addEventListener("change", loadWebhooks);
$("webhooks-refresh").addEventListener("click", loadWebhooks);
mountKeyBar(start);
