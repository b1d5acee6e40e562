// A change made from the console: a form, a review of exactly what will be sent, then one
// confirmed call. The Idempotency-Key is made when the operator reviews the change and is
// sent with every attempt of it: a double click, or a resend after an answer was lost,
// applies the change once (the API replays the first answer for the same key).

import { api } from "./api.js";
import { el, errorText, fill, statusLine } from "./dom.js";

/** A random UUID; crypto.randomUUID exists only in secure contexts (https, localhost), and
 *  the console may be served over plain http on a private network. */
export function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// Answers worth sending the same request again for: nothing was decided (no answer, a rate
// limit, the service or a dependency failing). Any other refusal is final for this key: the
// API would replay it.
function retryable(error) {
  return error.status === 0 || error.status === 429 || error.status >= 500;
}

/**
 * spec: {
 *   title, permission,
 *   fields: [{name, label, type ("number" | "text"), required, placeholder}],
 *   prepare(values) -> {method, path, body, summary}   (throw an Error for invalid input)
 *   done(answer) -> text shown after success,
 *   idempotent: false for a call that takes no Idempotency-Key
 * }
 * ctx: the view's context (who may do what); onChange: called after a success.
 */
export function actionPanel(spec, ctx, onChange, onClose) {
  const panel = el("div", { class: "action", "data-action": spec.name || "" });
  const status = statusLine();
  status.classList.add("action-status");
  const close = () => { panel.remove(); if (onClose) onClose(); };

  function editStage(values = {}) {
    const inputs = {};
    const rows = spec.fields.map((f) => {
      inputs[f.name] = el("input", {
        name: f.name, type: f.type === "number" ? "number" : "text", min: f.type === "number" ? 1 : null,
        step: f.type === "number" ? 1 : null, placeholder: f.placeholder || "", required: !!f.required,
        autocomplete: "off", value: values[f.name] || "",
      });
      return el("label", {}, el("span", {}, f.label), inputs[f.name]);
    });
    const review = el("button", { type: "submit", class: "primary", id: "action-review" }, "Review…");
    const form = el("form", { class: "action-form", novalidate: true }, rows, el("div", { class: "buttons" }, review,
      el("button", { type: "button", onclick: close }, "Cancel")));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const entered = Object.fromEntries(Object.entries(inputs).map(([k, input]) => [k, input.value.trim()]));
      let request;
      try {
        for (const f of spec.fields) {
          if (f.required && !entered[f.name]) throw new Error(`${f.label.toLowerCase()} is required`);
        }
        request = spec.prepare(entered);
      } catch (e) {
        status.error(e);
        return;
      }
      reviewStage(entered, { ...request, key: spec.idempotent === false ? null : newKey() });
    });
    status.clear();
    fill(panel, el("h3", {}, spec.title), lacksWarning(), form, status);
    const first = Object.values(inputs)[0];
    if (first) first.focus();
  }

  function lacksWarning() {
    return ctx.can(spec.permission) ? null : el("p", { class: "note" },
      `Your role (${ctx.who.role}) lacks ${spec.permission}: the API will refuse this.`);
  }

  function reviewStage(values, request) {
    let inFlight = false;
    const confirm = el("button", { type: "button", class: "primary danger", id: "action-confirm" }, "Confirm");
    const back = el("button", { type: "button", id: "action-back", onclick: () => editStage(values) }, "Back");
    confirm.addEventListener("click", async () => {
      if (inFlight) return; // the button is disabled too; this guards a click already queued
      inFlight = true;
      confirm.disabled = back.disabled = true;
      status.busy("Sending…");
      try {
        const answer = await api(request.method, request.path, { body: request.body, idempotencyKey: request.key });
        fill(panel, el("h3", {}, spec.title), el("p", { class: "status ok action-status" }, spec.done(answer)),
          el("div", { class: "buttons" }, el("button", { type: "button", id: "action-close", onclick: close }, "Close")));
        if (onChange) onChange(answer);
      } catch (error) {
        if (retryable(error)) {
          status.error({ message: errorText(error) + ". Confirm again to resend the same request" +
            (request.key ? " (same Idempotency-Key: applied at most once)." : ".") });
          confirm.disabled = back.disabled = false;
        } else {
          status.error(error);
          confirm.remove();
          back.disabled = false;
        }
        inFlight = false;
      }
    });
    fill(panel, el("h3", {}, spec.title), lacksWarning(),
      el("p", { class: "summary" }, request.summary),
      request.key ? el("p", { class: "key" }, "Idempotency-Key: ", el("code", {}, request.key)) : null,
      el("div", { class: "buttons" }, confirm, back), status);
    confirm.focus();
  }

  editStage();
  return panel;
}
