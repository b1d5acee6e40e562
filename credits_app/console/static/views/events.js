// Events: webhook endpoints, their deliveries with each attempt, and retrying a dead one.

import { actionPanel } from "../action.js";
import { api } from "../api.js";
import { actionButton, el, errorBox, fill, lacksNote, number, section, table, time } from "../dom.js";

const STATUSES = ["pending", "delivered", "dead"];
const PAGE = 25;

export function render(root, ctx) {
  const endpointsBox = el("div", { id: "endpoints" });
  const deliveriesBox = el("div", { id: "deliveries" });
  const slot = el("div", { id: "action-slot" });
  const endpoint = el("select", { name: "endpoint", id: "delivery-endpoint" }, el("option", { value: "" }, "any endpoint"));
  const status = el("select", { name: "status", id: "delivery-status" }, el("option", { value: "" }, "any status"),
    STATUSES.map((s) => el("option", { value: s }, s)));
  const filters = el("form", { class: "inline", id: "delivery-filters" }, endpoint, status,
    el("button", { type: "submit" }, "Show"));
  let cursors = [null];
  filters.addEventListener("submit", (event) => { event.preventDefault(); cursors = [null]; loadDeliveries(); });

  fill(root,
    section("Webhook endpoints", lacksNote(ctx, "webhooks:read"), endpointsBox),
    section("Deliveries", filters, slot, deliveriesBox));

  api("GET", "/api/webhooks/endpoints").then((answer) => {
    for (const e of answer.items) endpoint.append(el("option", { value: e.endpoint_id }, `#${e.endpoint_id} ${e.url}`));
    fill(endpointsBox, table([
      { label: "#", value: (e) => String(e.endpoint_id), class: "num" },
      { label: "url", value: (e) => e.url, class: "reason" },
      { label: "description", value: (e) => e.description || "", class: "reason" },
      { label: "enabled", value: (e) => e.enabled ? "yes" : "no" },
      { label: "event types", value: (e) => e.event_types.join(", ") },
      { label: "created", value: (e) => `${time(e.created_at)} by ${e.created_by}` },
    ], answer.items, { empty: "no endpoints" }));
  }, (error) => fill(endpointsBox, errorBox(error)));

  async function loadDeliveries() {
    const query = { endpoint: endpoint.value, status: status.value, limit: PAGE, cursor: cursors[cursors.length - 1] };
    try {
      const answer = await api("GET", "/api/webhooks/deliveries", { query });
      fill(deliveriesBox, table([
        { label: "#", value: (d) => String(d.delivery_id), class: "num" },
        { label: "endpoint", value: (d) => `#${d.endpoint_id}`, class: "num" },
        { label: "event", value: (d) => el("span", {}, d.event_type, el("br"), el("code", {}, d.event_id)) },
        { label: "status", value: (d) => el("span", { class: "badge " + d.status }, d.status) },
        { label: "attempts", value: (d) => attempts(d) },
        { label: "next attempt (UTC)", value: (d) => d.status === "pending" ? time(d.next_attempt_at) : "—" },
        { label: "delivered (UTC)", value: (d) => time(d.delivered_at) },
        { label: "", value: (d) => d.status === "delivered" ? "" : actionButton(d.status === "dead" ? "Retry…" : "Send now…",
          "webhooks:manage", ctx, () => retry(d), { class: "small retry", "data-delivery": d.delivery_id }) },
      ], answer.items, { empty: "no deliveries", rowAttrs: (d) => ({ "data-delivery": d.delivery_id, "data-status": d.status }) }),
      el("div", { class: "buttons pager" },
        el("button", { type: "button", disabled: cursors.length === 1, onclick: () => { cursors = [null]; loadDeliveries(); } }, "Newest"),
        el("button", { type: "button", disabled: !answer.next_cursor,
          onclick: () => { cursors.push(answer.next_cursor); loadDeliveries(); } }, "Older →")));
    } catch (error) {
      fill(deliveriesBox, errorBox(error));
    }
  }

  function retry(d) {
    fill(slot, actionPanel({
      name: "retry", title: `Send delivery #${d.delivery_id} again`, permission: "webhooks:manage", fields: [],
      idempotent: false, // a retry takes no key: retrying a delivery twice only makes it due now twice
      prepare: () => ({ method: "POST", path: `/api/webhooks/deliveries/${d.delivery_id}/retry`,
        summary: `Make delivery #${d.delivery_id} (${d.event_type} ${d.event_id}, ${d.status}) due now, ` +
          "its attempts counted from zero." }),
      done: (answer) => `Done: delivery #${answer.delivery_id} is ${answer.status}, due ${time(answer.next_attempt_at)} UTC.`,
    }, ctx, loadDeliveries));
  }

  loadDeliveries();
}

/** The attempt count, and every attempt's outcome in a <details> the operator can open. */
function attempts(d) {
  const summary = `${number(d.attempts)}` + (d.last_status_code ? `, last HTTP ${d.last_status_code}` : "") +
    (d.last_error ? `, last error: ${d.last_error}` : "");
  if (!d.attempt_history || !d.attempt_history.length) return summary;
  return el("details", {}, el("summary", {}, summary), el("ol", { class: "attempts" },
    d.attempt_history.map((a) => el("li", {}, `${time(a.attempted_at)} UTC, ${number(a.duration_ms)} ms: `,
      a.status_code ? `HTTP ${a.status_code}` : "no answer", a.error ? ` (${a.error})` : ""))));
}
