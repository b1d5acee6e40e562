// Queues: the configured RQ queues, their workers and cron entries, and failed jobs with a
// requeue, all from the API's JSON endpoints (queues:read, jobs:requeue).

import { actionPanel } from "../action.js";
import { api } from "../api.js";
import { actionButton, el, errorBox, fill, lacksNote, number, section, table, time } from "../dom.js";

export function render(root, ctx) {
  const overview = el("div", { id: "queues-overview" });
  const workers = el("div", { id: "queue-workers" });
  const schedule = el("div", { id: "queue-schedule" });
  const failed = el("div", { id: "queue-failed" });
  const slot = el("div", { id: "action-slot" });
  fill(root,
    section("Queues", lacksNote(ctx, "queues:read"), el("div", { class: "buttons" },
      el("button", { type: "button", id: "queues-refresh", onclick: () => load() }, "Refresh")), overview),
    section("Failed jobs", slot, failed),
    section("Workers", workers),
    section("Schedule", schedule));

  let shownQueue = null;

  async function load() {
    try {
      const answer = await api("GET", "/api/queues");
      fill(overview, table([
        { label: "queue", value: (q) => q.name },
        { label: "for", value: (q) => q.purpose },
        { label: "waiting", value: (q) => number(q.waiting), class: "num" },
        { label: "running", value: (q) => number(q.running), class: "num" },
        { label: "failed", value: (q) => number(q.failed), class: "num failed-count" },
        { label: "scheduled", value: (q) => number(q.scheduled), class: "num" },
        { label: "", value: (q) => el("button", { type: "button", class: "small show-failed", "data-queue": q.name,
          onclick: () => loadFailed(q.name) }, "Failed jobs") },
      ], answer.queues, { rowAttrs: (q) => ({ "data-queue": q.name }) }));
      fill(workers, table([
        { label: "worker", value: (w) => w.name },
        { label: "state", value: (w) => w.state },
        { label: "queues", value: (w) => (w.queues || []).join(", ") },
        { label: "current job", value: (w) => w.current_job_id || "" },
        { label: "last heartbeat (UTC)", value: (w) => time(w.last_heartbeat) },
      ], answer.workers || [], { empty: "no worker is running" }));
      fill(schedule, table([
        { label: "entry", value: (s) => s.id },
        { label: "cron (UTC)", value: (s) => s.cron || "" },
        { label: "next run (UTC)", value: (s) => time(s.next_run_at) },
        { label: "runs", value: (s) => s.func || "" },
      ], answer.schedule || [], { empty: "nothing scheduled (is the scheduler running?)" }));
      const first = answer.queues.find((q) => q.failed > 0);
      if (shownQueue) loadFailed(shownQueue);
      else if (first) loadFailed(first.name);
    } catch (error) {
      fill(overview, errorBox(error));
    }
  }

  async function loadFailed(name) {
    shownQueue = name;
    try {
      const answer = await api("GET", `/api/queues/${encodeURIComponent(name)}/failed`, { query: { limit: 50 } });
      fill(failed, el("p", { class: "muted" }, `queue ${name}`), table([
        { label: "job", value: (j) => el("code", {}, j.id) },
        { label: "function", value: (j) => j.func || "" },
        { label: "enqueued (UTC)", value: (j) => time(j.enqueued_at) },
        { label: "failed (UTC)", value: (j) => time(j.ended_at) },
        { label: "error", value: (j) => j.error ? el("details", {}, el("summary", {}, lastLine(j.error)),
          el("pre", {}, j.error)) : "", class: "reason" },
        { label: "", value: (j) => actionButton("Requeue…", "jobs:requeue", ctx, () => requeue(name, j),
          { class: "small requeue", "data-job": j.id }) },
      ], answer.items, { empty: "no failed jobs", rowAttrs: (j) => ({ "data-job": j.id }) }));
    } catch (error) {
      fill(failed, errorBox(error));
    }
  }

  function requeue(name, job) {
    fill(slot, actionPanel({
      name: "requeue", title: `Requeue job ${job.id}`, permission: "jobs:requeue", fields: [], idempotent: false,
      prepare: () => ({ method: "POST", path: `/api/queues/${encodeURIComponent(name)}/failed/` +
        `${encodeURIComponent(job.id)}/requeue`, summary: `Put failed job ${job.id} (${job.func || "?"}) back on ` +
        `queue ${name}: a worker runs it again.` }),
      done: (answer) => `Done: job ${answer.id} is ${answer.status}.`,
    }, ctx, () => load()));
  }

  load();
}

function lastLine(text) {
  const lines = text.trim().split("\n");
  return lines[lines.length - 1].slice(0, 160);
}
