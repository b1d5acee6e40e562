// The user view: find a user; their balance, its chart, ledger and holds; and the changes an
// operator makes (add, deduct, reset, reverse an entry, release a hold), each with a reason.

import { actionPanel } from "../action.js";
import { api } from "../api.js";
import { balanceChart } from "../chart.js";
import { actionButton, el, errorBox, fill, instant, number, section, signed, statusLine, table, time } from "../dom.js";

const KINDS = ["add", "deduct", "reset", "daily_grant", "reversal", "capture"];
const RANGES = [["7d", "7 days", 7], ["30d", "30 days", 30], ["all", "All", null]];
const PAGE = 20;

export function render(root, ctx) {
  const userId = ctx.params[0];
  fill(root, findCard(ctx, userId));
  if (userId !== undefined) {
    if (!/^[1-9][0-9]*$/.test(userId)) {
      root.append(errorBox({ message: "a user id is a positive integer" }));
      return;
    }
    const page = el("div", { id: "user-page" });
    root.append(page);
    showUser(page, ctx, Number(userId));
  }
}

function findCard(ctx, current) {
  const input = el("input", { id: "find-input", name: "find", placeholder: "user id or email", autocomplete: "off",
    value: current || "" });
  const status = statusLine();
  const form = el("form", { class: "inline", id: "find-form" }, input,
    el("button", { type: "submit", class: "primary", id: "find-button" }, "Find"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (/^[0-9]+$/.test(text)) {
      ctx.go("#/user/" + text);
      return;
    }
    if (!text) return;
    status.busy("Looking up…");
    try {
      const found = await api("GET", "/api/users", { query: { email: text, limit: 1 } });
      if (found.items.length) ctx.go("#/user/" + found.items[0].user_id);
      else status.error({ message: `no user has the email ${text}` });
    } catch (error) {
      status.error(error);
    }
  });
  return section("Find a user", form, status);
}

// Loads can overlap (a refresh while the first load is still out): only the newest call of
// each loader may draw, so a slow older answer never replaces a newer one.
function latestOnly() {
  const counts = {};
  return (name) => {
    const n = (counts[name] = (counts[name] || 0) + 1);
    return () => counts[name] === n;
  };
}

function showUser(page, ctx, userId) {
  const current = latestOnly();
  const state = { range: "all", kinds: [], since: "", until: "", cursors: [null] };
  const header = el("div", {});
  const figures = el("div", { class: "figures", id: "balance" });
  const slot = el("div", { id: "action-slot" });
  const chartBox = el("div", { id: "chart-box" });
  const ledgerBox = el("div", { id: "ledger" });
  const holdsBox = el("div", { id: "holds" });

  const refresh = () => {
    loadBalance();
    loadChart();
    state.cursors = [null];
    loadLedger();
    loadHolds();
  };
  const open = (spec) => {
    fill(slot, actionPanel(spec, ctx, refresh));
    slot.scrollIntoView({ block: "nearest" });
  };
  const buttons = el("div", { class: "buttons" },
    actionButton("Add…", "credits:add", ctx, () => open(changeSpec("add", userId)), { id: "action-add" }),
    actionButton("Deduct…", "credits:deduct", ctx, () => open(changeSpec("deduct", userId)), { id: "action-deduct" }),
    actionButton("Reset…", "credits:reset", ctx, () => open(resetSpec(userId)), { id: "action-reset" }),
    el("button", { type: "button", id: "refresh", onclick: refresh }, "Refresh"));

  fill(page,
    section("User", header, figures, buttons, slot),
    section("Balance over time", rangeButtons(), chartBox),
    section("Ledger", ledgerFilters(), ledgerBox),
    section("Holds", holdsBox));

  api("GET", `/api/users/${userId}`).then((user) => {
    fill(header, el("p", { class: "user-line" },
      el("strong", { id: "user-name" }, user.name), ` · #${user.user_id} · `, el("span", { id: "user-email" }, user.email),
      ` · created ${time(user.created_at)} UTC`),
    Object.keys(user.attributes || {}).length ? el("p", { class: "attributes" }, "attributes: ",
      Object.entries(user.attributes).map(([k, v]) => el("code", {}, `${k}=${JSON.stringify(v)}`))) : null);
  }, (error) => fill(header, errorBox(error)));

  async function loadBalance() {
    const fresh = current("balance");
    try {
      const b = await api("GET", `/api/credits/${userId}`);
      if (!fresh()) return;
      fill(figures, figure("Balance", b.credits, "balance-credits"), figure("Held", b.held, "balance-held"),
        figure("Available", b.available, "balance-available"),
        el("p", { class: "muted" }, `last change ${time(b.last_updated)} UTC`));
    } catch (error) {
      if (fresh()) fill(figures, errorBox(error));
    }
  }

  function rangeButtons() {
    const box = el("div", { class: "buttons segmented", id: "ranges" });
    for (const [key, label] of RANGES) {
      box.append(el("button", {
        type: "button", "data-range": key, class: key === state.range ? "selected" : "",
        onclick: () => {
          state.range = key;
          for (const b of box.children) b.classList.toggle("selected", b.dataset.range === key);
          loadChart();
        },
      }, label));
    }
    return box;
  }

  async function loadChart() {
    const fresh = current("chart");
    const days = RANGES.find((r) => r[0] === state.range)[2];
    const query = { points: 200 };
    if (days) query.since = new Date(Date.now() - days * 86400e3).toISOString();
    try {
      const h = await api("GET", `/api/credits/${userId}/history`, { query });
      if (!fresh()) return;
      const chart = balanceChart(h.points, `Balance of user ${userId} from ${time(h.since)} to ${time(h.until)} UTC`);
      chart.id = "chart";
      chart.setAttribute("data-range", state.range);
      fill(chartBox, chart, el("p", { class: "muted" }, `${time(h.since)} → ${time(h.until)} UTC, ${h.points.length} points`));
    } catch (error) {
      if (fresh()) fill(chartBox, errorBox(error));
    }
  }

  function ledgerFilters() {
    const boxes = KINDS.map((kind) => el("label", { class: "check" },
      el("input", { type: "checkbox", name: "kind", value: kind }), kind));
    const since = el("input", { name: "since", placeholder: "since, e.g. 2026-01-31", autocomplete: "off" });
    const until = el("input", { name: "until", placeholder: "until, e.g. 2026-02-01T12:00:00Z", autocomplete: "off" });
    const form = el("form", { class: "filters", id: "ledger-filters" },
      el("fieldset", {}, el("legend", {}, "kinds (none: all)"), boxes),
      el("fieldset", {}, el("legend", {}, "time, UTC: after since, up to until"), since, until),
      el("div", { class: "buttons" }, el("button", { type: "submit", id: "ledger-apply" }, "Apply"),
        el("button", { type: "reset", id: "ledger-clear" }, "Clear")));
    const apply = () => {
      state.kinds = boxes.map((b) => b.firstChild).filter((c) => c.checked).map((c) => c.value);
      state.since = since.value ? instant(since.value) : "";
      state.until = until.value ? instant(until.value) : "";
      state.cursors = [null];
      loadLedger();
    };
    form.addEventListener("submit", (event) => { event.preventDefault(); apply(); });
    form.addEventListener("reset", () => setTimeout(apply)); // after the fields are cleared
    return form;
  }

  async function loadLedger() {
    const fresh = current("ledger");
    const cursor = state.cursors[state.cursors.length - 1];
    const query = { limit: PAGE, kind: state.kinds, since: state.since, until: state.until, cursor };
    try {
      const result = await api("GET", `/api/credits/${userId}/transactions`, { query });
      if (!fresh()) return;
      const rows = table([
        { label: "#", value: (e) => String(e.id), class: "num" },
        { label: "at (UTC)", value: (e) => time(e.created_at) },
        { label: "kind", value: (e) => e.kind },
        { label: "amount", value: (e) => signed(e.amount), class: "num" },
        { label: "balance after", value: (e) => number(e.balance_after), class: "num" },
        { label: "reason", value: (e) => e.reason === null ? "" : e.reason, class: "reason" },
        { label: "actor", value: (e) => e.actor },
        { label: "refers to", value: (e) => e.reverses ? `reverses #${e.reverses}` : e.hold_id ? `hold #${e.hold_id}`
          : e.grant_date ? `grant ${e.grant_date}` : "" },
        { label: "", value: (e) => e.kind === "reversal" ? "" : actionButton("Reverse…", "credits:reverse", ctx,
          () => open(reverseSpec(userId, e)), { class: "small reverse", "data-entry": e.id }) },
      ], result.items, { empty: "no entries", rowAttrs: (e) => ({ "data-entry": e.id, "data-kind": e.kind }) });
      const pager = el("div", { class: "buttons pager" },
        el("button", { type: "button", id: "ledger-newest", disabled: state.cursors.length === 1,
          onclick: () => { state.cursors = [null]; loadLedger(); } }, "Newest"),
        el("button", { type: "button", id: "ledger-newer", disabled: state.cursors.length === 1,
          onclick: () => { state.cursors.pop(); loadLedger(); } }, "← Newer"),
        el("span", { class: "muted" }, `page ${state.cursors.length}`),
        el("button", { type: "button", id: "ledger-older", disabled: !result.next_cursor,
          onclick: () => { state.cursors.push(result.next_cursor); loadLedger(); } }, "Older →"));
      fill(ledgerBox, rows, pager);
    } catch (error) {
      if (fresh()) fill(ledgerBox, errorBox(error));
    }
  }

  async function loadHolds() {
    const fresh = current("holds");
    try {
      const result = await api("GET", `/api/credits/${userId}/holds`, { query: { limit: PAGE } });
      if (!fresh()) return;
      fill(holdsBox, table([
        { label: "#", value: (h) => String(h.hold_id), class: "num" },
        { label: "amount", value: (h) => number(h.amount), class: "num" },
        { label: "status", value: (h) => h.status },
        { label: "captured", value: (h) => number(h.captured), class: "num" },
        { label: "created (UTC)", value: (h) => time(h.created_at) },
        { label: "expires (UTC)", value: (h) => time(h.expires_at) },
        { label: "reason", value: (h) => h.reason === null ? "" : h.reason, class: "reason" },
        { label: "actor", value: (h) => h.actor },
        { label: "release reason", value: (h) => h.close_reason === null ? "" : h.close_reason,
          class: "reason close-reason" },
        { label: "", value: (h) => h.status !== "open" ? "" : actionButton("Release…", "holds:release", ctx,
          () => open(releaseSpec(h)), { class: "small release", "data-hold": h.hold_id }) },
      ], result.items, { empty: "no holds" }),
      result.next_cursor ? el("p", { class: "muted" }, `the newest ${PAGE} holds are shown`) : null);
    } catch (error) {
      if (fresh()) fill(holdsBox, errorBox(error));
    }
  }

  refresh();
}

function figure(label, value, id) {
  return el("div", { class: "figure" }, el("span", { class: "label" }, label),
    el("span", { class: "value", id }, number(value)));
}

function amountOf(values) {
  const amount = Number(values.amount);
  if (!Number.isSafeInteger(amount) || amount < 1) throw new Error("the amount is a positive whole number");
  return amount;
}

const credits = (n) => `${number(n)} credit${n === 1 ? "" : "s"}`;
const changed = (answer) => `Done: the balance is now ${number(answer.credits)} (entry #${answer.entry.id}).`;
const REASON = { name: "reason", label: "Reason", type: "text", required: true, placeholder: "why (kept on the ledger)" };

// Add and deduct: the same form, one verb apart.
function changeSpec(kind, userId) {
  const [verb, toFrom] = kind === "add" ? ["Add", "to"] : ["Deduct", "from"];
  return {
    name: kind, title: `${verb} credits ${toFrom} user ${userId}`, permission: `credits:${kind}`,
    fields: [{ name: "amount", label: "Amount", type: "number", required: true }, REASON],
    prepare: (v) => {
      const amount = amountOf(v);
      return { method: "POST", path: `/api/credits/${userId}/${kind}`, body: { amount, reason: v.reason },
        summary: `${verb} ${credits(amount)} ${toFrom} user ${userId}, reason: “${v.reason}”.` };
    },
    done: changed,
  };
}

function resetSpec(userId) {
  return {
    name: "reset", title: `Reset user ${userId} to zero`, permission: "credits:reset",
    fields: [REASON],
    prepare: (v) => ({ method: "PATCH", path: `/api/credits/${userId}/reset`, body: { reason: v.reason },
      summary: `Set the balance of user ${userId} to 0 and close their open holds, reason: “${v.reason}”.` }),
    done: changed,
  };
}

function reverseSpec(userId, entry) {
  return {
    name: "reverse", title: `Reverse entry #${entry.id} (${entry.kind} ${signed(entry.amount)})`,
    permission: "credits:reverse",
    fields: [{ name: "amount", label: "Amount (empty: all that remains)", type: "number" }, REASON],
    prepare: (v) => {
      const body = { reason: v.reason };
      if (v.amount) body.amount = amountOf(v);
      return { method: "POST", path: `/api/credits/${userId}/entries/${entry.id}/reverse`, body,
        summary: `Reverse ${body.amount ? number(body.amount) + " of" : "all that remains of"} entry #${entry.id} ` +
          `(${entry.kind} ${signed(entry.amount)}), reason: “${v.reason}”.` };
    },
    done: changed,
  };
}

function releaseSpec(hold) {
  // The API keeps a release's reason on the hold (close_reason): optional there, required here as for
  // every other change an operator makes.
  return {
    name: "release", title: `Release hold #${hold.hold_id}`, permission: "holds:release",
    fields: [{ ...REASON, placeholder: "why (kept on the hold)" }],
    prepare: (v) => ({ method: "POST", path: `/api/holds/${hold.hold_id}/release`, body: { reason: v.reason },
      summary: `Release hold #${hold.hold_id}: its ${credits(hold.amount)} are available again, ` +
        `reason: “${v.reason}”.` }),
    done: (answer) => `Done: hold #${answer.hold.hold_id} is ${answer.hold.status}; ` +
      `${number(answer.available)} credits available.`,
  };
}
