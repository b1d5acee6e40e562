// The daily grant: the last 90 days of runs as charts and a table; a run in progress shows
// its chunks and the view reloads itself until no run is running; a catch-up date can be
// enqueued (the API decides which dates are allowed).

import { api } from "../api.js";
import { dayBars } from "../chart.js";
import { actionButton, el, errorBox, fill, lacksNote, number, section, statusLine, table, time } from "../dom.js";

const DAYS = 90;
const REFRESH_MS = 3000;

function seconds(run) {
  if (!run.finished_at || !run.started_at) return null;
  return Math.max(0, (Date.parse(run.finished_at) - Date.parse(run.started_at)) / 1000);
}

function lastDays(count) {
  const today = Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth(), new Date().getUTCDate());
  return Array.from({ length: count }, (_, i) => new Date(today - (count - 1 - i) * 86400e3).toISOString().slice(0, 10));
}

export function render(root, ctx) {
  const progress = el("div", { id: "grant-progress" });
  const charts = el("div", { id: "grant-charts" });
  const runs = el("div", { id: "grant-runs" });
  fill(root,
    section("Daily grant: the last 90 days", lacksNote(ctx, "grants:read"), progress, charts),
    section("Catch up a date", catchUpForm(ctx, () => load())),
    section("Runs", runs));

  let timer = null;
  async function load() {
    clearTimeout(timer);
    try {
      const answer = await api("GET", "/api/grants/daily", { query: { limit: DAYS } });
      if (!ctx.life.alive()) return;
      draw(answer.items);
      if (answer.items.some((run) => run.status === "running")) timer = ctx.life.after(REFRESH_MS, load);
    } catch (error) {
      fill(progress, errorBox(error));
    }
  }

  function draw(items) {
    const byDate = new Map(items.map((run) => [run.grant_date, run]));
    const days = lastDays(DAYS).map((date) => ({ date, run: byDate.get(date) }));
    const title = (d) => d.run ? `${d.date}: ${d.run.status}, ${number(d.run.users_credited)} users credited` +
      (seconds(d.run) === null ? "" : `, ${seconds(d.run).toFixed(2)} s`) : `${d.date}: no run`;
    fill(charts,
      dayBars(days.map((d) => ({ date: d.date, value: d.run ? d.run.users_credited : null,
        status: d.run && d.run.status, title: title(d) })), "Users credited per day", "users", true),
      dayBars(days.map((d) => ({ date: d.date, value: d.run ? seconds(d.run) : null,
        status: d.run && d.run.status, title: title(d) })), "Duration per day (seconds)", "seconds"),
      el("p", { class: "legend" }, el("span", { class: "swatch done" }), "done ",
        el("span", { class: "swatch running" }), "running ", el("span", { class: "swatch failed" }), "failed"));

    const running = items.filter((run) => run.status === "running");
    fill(progress, running.map((run) => el("p", { class: "progress", "data-date": run.grant_date },
      `Run of ${run.grant_date} in progress: chunk ${run.chunks_done}/${run.chunks_total}, `,
      `${number(run.users_credited)} users credited so far `,
      el("progress", { max: Math.max(run.chunks_total, 1), value: run.chunks_done }),
      el("span", { class: "muted" }, ` (refreshing every ${REFRESH_MS / 1000} s)`))));

    fill(runs, table([
      { label: "date", value: (r) => r.grant_date },
      { label: "status", value: (r) => el("span", { class: "badge " + r.status }, r.status) },
      { label: "users credited", value: (r) => number(r.users_credited), class: "num" },
      { label: "chunks", value: (r) => `${r.chunks_done}/${r.chunks_total}`, class: "num chunks" },
      { label: "amount", value: (r) => number(r.amount), class: "num" },
      { label: "started (UTC)", value: (r) => time(r.started_at) },
      { label: "finished (UTC)", value: (r) => time(r.finished_at) },
      { label: "duration", value: (r) => seconds(r) === null ? "—" : `${seconds(r).toFixed(2)} s`, class: "num" },
      { label: "by", value: (r) => r.scheduled ? "schedule" : "operator" },
      { label: "last error", value: (r) => r.last_error || "", class: "reason" },
    ], items, { empty: "no runs yet", rowAttrs: (r) => ({ "data-date": r.grant_date, "data-status": r.status }) }));
  }

  load();
}

function catchUpForm(ctx, reload) {
  const input = el("input", { id: "grant-date", name: "date", placeholder: "YYYY-MM-DD (empty: today, UTC)",
    autocomplete: "off" });
  const status = statusLine();
  status.id = "grant-run-status";
  let inFlight = false;
  const button = actionButton("Enqueue the grant", "grants:run", ctx, null, { id: "grant-run", type: "submit" });
  const form = el("form", { class: "inline" }, input, button);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (inFlight) return;
    inFlight = button.disabled = true;
    status.busy("Sending…");
    const body = input.value.trim() ? { date: input.value.trim() } : {};
    try {
      const answer = await api("POST", "/api/grants/daily/run", { body });
      status.ok(answer.status === "queued" ? `Queued: job ${answer.job_id} grants ${answer.date}.`
        : `${answer.date} is already done: nothing to run.`);
      reload();
    } catch (error) {
      status.error(error);
    } finally {
      inFlight = button.disabled = false;
    }
  });
  return el("div", {}, el("p", { class: "muted" }, "Users already granted that date are not granted again; " +
    "the API allows today and the catch-up window before it."), form, status);
}
