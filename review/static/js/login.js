// The sign-in page: POST /review/api/login, then back to where the user was going.
import { api, ApiError } from "./api.js";

function nextUrl() {
  const next = new URLSearchParams(location.search).get("next") || "/review/";
  // Only same-site paths under /review/: never an open redirect.
  return next.startsWith("/review/") && !next.startsWith("//") ? next : "/review/";
}

const form = document.getElementById("login-form");
const error = document.getElementById("login-error");

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.hidden = true;
  const username = document.getElementById("username").value.trim();
  const password = document.getElementById("password").value;
  try {
    await api.login(username, password);
    location.assign(nextUrl());
  } catch (err) {
    error.textContent =
      err instanceof ApiError && err.status === 401
        ? "Wrong user name or password."
        : `Sign-in failed: ${err.message}`;
    error.hidden = false;
  }
});
