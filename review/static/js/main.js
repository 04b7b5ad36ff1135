// The review page: who is signed in, and the two views (worklist, case) by the URL hash.
import { api, setCsrfToken } from "./api.js";
import { toast } from "./dialog.js";
import { editHost, initReview } from "./review.js";
import { initViewer, showCase, state } from "./viewer.js";
import { initWorklist, showWorklist } from "./worklist.js";

function showView(name) {
  document.getElementById("worklist-view").hidden = name !== "worklist";
  document.getElementById("viewer-view").hidden = name !== "viewer";
}

async function route() {
  const match = location.hash.match(/^#\/case\/(.+)$/);
  try {
    if (match) {
      showView("viewer");
      await showCase(decodeURIComponent(match[1]));
    } else {
      showView("worklist");
      await showWorklist();
    }
  } catch (err) {
    toast(err.message);
  }
}

function wireExport() {
  const format = document.getElementById("export-format");
  const link = document.getElementById("export-link");
  const update = () => {
    link.href = `/review/api/export?${new URLSearchParams({ format: format.value, status: "accepted,corrected" })}`;
  };
  format.addEventListener("change", update);
  update();
}

async function main() {
  let me;
  try {
    me = await api.me();
  } catch {
    const back = encodeURIComponent(location.pathname + location.hash);
    location.assign(`/review/login?next=${back}`);
    return;
  }
  setCsrfToken(me.csrf_token);
  state.user = me;
  document.getElementById("user-name").textContent = me.user;
  document.getElementById("user-role").textContent = me.role;
  document.getElementById("logout").addEventListener("click", async () => {
    await api.logout().catch(() => null);
    location.assign("/review/login");
  });
  wireExport();
  initWorklist((err) => toast(err.message));
  initViewer(editHost);
  initReview();
  window.addEventListener("hashchange", route);
  await route();
}

main();
