// The worklist: filters, sorting, paging (server side), and the keyboard: Enter opens the
// highlighted case, n the next case to review, arrow keys move the highlight.
import { api } from "./api.js";
import { typing } from "./dialog.js";

const STORE = "review.worklist";
const state = loadState();
let rows = [];
let current = 0;

function loadState() {
  const defaults = { status: "", model: "", source: "", q: "", sort: "created_at",
    order: "desc", page: 1, page_size: 50 };
  try {
    return { ...defaults, ...JSON.parse(sessionStorage.getItem(STORE) || "{}") };
  } catch {
    return defaults;
  }
}

function saveState() {
  sessionStorage.setItem(STORE, JSON.stringify(state));
}

/** How long ago, in the largest sensible unit. */
export function age(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function row(c, index) {
  const tr = document.createElement("tr");
  tr.dataset.caseId = c.id;
  const status = cell("");
  const badge = document.createElement("span");
  badge.className = `status status-${c.status}`;
  badge.textContent = c.status.replace("_", " ");
  status.append(badge);
  tr.append(
    cell(c.id),
    status,
    cell(c.model_version ? `${c.model} v${c.model_version}` : c.model),
    cell(c.source),
    cell(String(c.finding_count), "num"),
    cell(c.max_score == null ? "–" : Number(c.max_score).toFixed(3), "num"),
    cell(age(c.age_s)),
  );
  tr.addEventListener("click", () => open(c.id));
  tr.classList.toggle("current", index === current);
  return tr;
}

function open(id) {
  location.hash = `#/case/${encodeURIComponent(id)}`;
}

function highlight(index) {
  const trs = document.querySelectorAll("#worklist tbody tr");
  current = Math.max(0, Math.min(trs.length - 1, index));
  trs.forEach((tr, i) => tr.classList.toggle("current", i === current));
  trs[current]?.scrollIntoView({ block: "nearest" });
}

/** Load and show the current page of the worklist. */
export async function showWorklist() {
  syncForm();
  const params = Object.fromEntries(Object.entries(state).filter(([, v]) => v !== ""));
  const result = await api.cases(params);
  rows = result.cases;
  current = Math.min(current, Math.max(0, rows.length - 1));
  document.querySelector("#worklist tbody").replaceChildren(...rows.map(row));
  const pages = Math.max(1, Math.ceil(result.total / result.page_size));
  document.getElementById("page-info").textContent =
    `page ${result.page} of ${pages} · ${result.total} case(s)`;
  document.getElementById("prev-page").disabled = result.page <= 1;
  document.getElementById("next-page").disabled = result.page >= pages;
  document.querySelectorAll("#worklist th[data-sort]").forEach((th) => {
    th.classList.toggle("sorted-asc", th.dataset.sort === state.sort && state.order === "asc");
    th.classList.toggle("sorted-desc", th.dataset.sort === state.sort && state.order === "desc");
  });
  const models = new Set(rows.map((c) => c.model));
  document.getElementById("model-list").replaceChildren(...[...models].map((m) => new Option(m)));
}

function syncForm() {
  for (const name of ["status", "model", "source", "q", "page_size"]) {
    const el = document.querySelector(`#filters [name=${name}]`);
    if (el) el.value = state[name];
  }
}

/** Open the next case to review (after `afterId` when given). */
export async function openNext(afterId) {
  try {
    const next = await api.next(afterId);
    open(next.id);
    return true;
  } catch (err) {
    if (err.status === 404) return false;
    throw err;
  }
}

/** Wire the filters, sort headers, pager and keys once; `onError` reports failures. */
export function initWorklist(onError) {
  const reload = () => showWorklist().catch(onError);
  document.getElementById("filters").addEventListener("submit", (e) => {
    e.preventDefault();
    const data = new FormData(e.target);
    for (const [k, v] of data.entries()) state[k] = String(v).trim();
    state.page = 1;
    saveState();
    reload();
  });
  document.querySelectorAll("#worklist th[data-sort]").forEach((th) =>
    th.addEventListener("click", () => {
      const key = th.dataset.sort;
      state.order = state.sort === key && state.order === "desc" ? "asc" : "desc";
      state.sort = key;
      state.page = 1;
      saveState();
      reload();
    }));
  const turn = (delta) => {
    state.page = Math.max(1, Number(state.page) + delta);
    saveState();
    reload();
  };
  document.getElementById("prev-page").addEventListener("click", () => turn(-1));
  document.getElementById("next-page").addEventListener("click", () => turn(1));
  document.addEventListener("keydown", (e) => {
    if (document.getElementById("worklist-view").hidden || typing(e)) return;
    if (e.key === "Enter" && rows[current]) open(rows[current].id);
    else if (e.key === "n") openNext().then((ok) => ok || onError(new Error("no case left to review")), onError);
    else if (e.key === "ArrowDown" || e.key === "j") highlight(current + 1);
    else if (e.key === "ArrowUp" || e.key === "k") highlight(current - 1);
    else return;
    e.preventDefault();
  });
}
