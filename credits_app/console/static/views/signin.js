// Sign in with a personal bearer token: the console keeps it in this tab's sessionStorage and
// asks the API who it is (GET /api/auth/whoami); the API alone decides what it may do.

import { el, fill } from "../dom.js";

/** message: why the operator is here (the API's words for a refused token), if anything. */
export function render(root, message, onToken) {
  const input = el("input", { id: "token-input", name: "token", type: "password", autocomplete: "off",
    spellcheck: "false", placeholder: "eyJhbGciOi…" });
  const form = el("form", { class: "stacked", id: "sign-in-form" },
    el("label", {}, el("span", {}, "Bearer token"), input),
    el("div", { class: "buttons" }, el("button", { type: "submit", class: "primary", id: "sign-in" }, "Sign in")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = input.value.trim().replace(/^bearer\s+/i, "");
    if (token) onToken(token);
  });
  fill(root, el("section", { class: "card sign-in" },
    el("h2", {}, "Sign in"),
    message ? el("p", { class: "error", id: "sign-in-message", role: "alert" }, message) : null,
    el("p", {}, "Paste a personal token; its subject is recorded as the actor of every change you make. ",
      "An admin issues one with ", el("code", {}, "flask --app wsgi auth issue-token --role admin --sub YOUR-NAME"),
      " (or ", el("code", {}, "--role support"), " to look without changing anything)."),
    el("p", { class: "muted" }, "The token stays in this tab only (session storage) and is sent only to this " +
      "service's API."),
    form));
  input.focus();
}
