// Schema: the live schema, the history of external updates, and a dry run of an update
// (applied and rolled back by the API: nothing changes).

import { api } from "../api.js";
import { actionButton, el, errorBox, fill, lacksNote, number, section, statusLine, table, time } from "../dom.js";

export function render(root, ctx) {
  const live = el("div", { id: "schema-live" });
  const changes = el("div", { id: "schema-changes" });
  fill(root,
    section("Dry run an update", lacksNote(ctx, "schema:apply"), dryRunForm(ctx)),
    section("External updates", changes),
    section("Live schema", lacksNote(ctx, "schema:read"), live));
  loadLive(live);
  loadChanges(changes, []);
}

function dryRunForm(ctx) {
  const sql = el("textarea", { id: "schema-sql", name: "sql", rows: 4, spellcheck: "false",
    placeholder: "ALTER TABLE users ADD COLUMN tier text DEFAULT 'basic'" });
  const name = el("input", { id: "schema-name", name: "name", placeholder: "name, e.g. add-user-tier", autocomplete: "off" });
  const status = statusLine();
  status.id = "schema-status";
  const result = el("div", { id: "schema-result" });
  let inFlight = false;
  const button = actionButton("Dry run", "schema:apply", ctx, null, { id: "schema-dry-run", type: "submit", class: "primary" });
  const form = el("form", { class: "stacked" }, sql, name, el("div", { class: "buttons" }, button));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (inFlight) return;
    inFlight = button.disabled = true;
    status.busy("Running the update in a transaction that is rolled back…");
    fill(result);
    const body = { sql: sql.value, dry_run: true };
    if (name.value.trim()) body.name = name.value.trim();
    try {
      const answer = await api("POST", "/api/schema/apply", { body });
      status.ok(`${answer.status}: ${answer.name}, ${answer.statements} statement(s) in ${answer.duration_ms} ms; ` +
        "nothing was kept.");
      fill(result, el("p", {}, "checksum ", el("code", {}, answer.checksum)),
        el("ul", { class: "effects" }, (answer.effects || []).map((e) => el("li", {}, e))));
    } catch (error) {
      status.error(error);
      const details = error.details || {};
      if (Object.keys(details).length) fill(result, el("pre", { class: "details" }, JSON.stringify(details, null, 2)));
    } finally {
      inFlight = button.disabled = false;
    }
  });
  return el("div", {}, el("p", { class: "muted" }, "The API parses the SQL, checks it against its allow-list, " +
    "runs it and rolls it back, and answers what it would add."), form, status, result);
}

async function loadLive(box) {
  try {
    const answer = await api("GET", "/api/schema");
    fill(box, el("p", { class: "muted" }, `${answer.dialect}: ${answer.tables.length} tables and views`),
      answer.tables.map((t) => el("details", { class: "table-schema", "data-table": t.name },
        el("summary", {}, `${t.name} (${t.kind}${t.core ? ", the service's own" : ""}, ${t.columns.length} columns)`),
        table([
          { label: "column", value: (c) => c.name },
          { label: "type", value: (c) => c.type },
          { label: "null", value: (c) => c.nullable ? "yes" : "no" },
          { label: "default", value: (c) => c.default === null ? "" : c.default, class: "reason" },
        ], t.columns),
        constraints(t))));
  } catch (error) {
    fill(box, errorBox(error));
  }
}

function constraints(t) {
  const cols = (list) => (list || []).join(", ");
  const lines = [];
  if (t.primary_key && (t.primary_key.columns || []).length) lines.push(`primary key (${cols(t.primary_key.columns)})`);
  for (const f of t.foreign_keys || []) {
    lines.push(`foreign key ${f.name || ""} (${cols(f.columns)}) → ${f.references} (${cols(f.referred_columns)})`);
  }
  for (const u of t.unique_constraints || []) lines.push(`unique ${u.name || ""} (${cols(u.columns)})`);
  for (const c of t.check_constraints || []) lines.push(`check ${c.name || ""}: ${c.sqltext}`);
  for (const i of t.indexes || []) {
    lines.push(`${i.unique ? "unique " : ""}index ${i.name || ""} (${cols((i.columns || []).concat(i.expressions || []))})`);
  }
  return lines.length ? el("ul", { class: "constraints" }, lines.map((l) => el("li", {}, l))) : null;
}

async function loadChanges(box, shown, cursor) {
  try {
    const answer = await api("GET", "/api/schema/changes", { query: { limit: 50, cursor } });
    const all = shown.concat(answer.items);
    fill(box, table([
      { label: "#", value: (c) => String(c.id), class: "num" },
      { label: "name", value: (c) => c.name },
      { label: "outcome", value: (c) => el("span", { class: "badge " + c.outcome }, c.outcome) },
      { label: "by", value: (c) => c.actor },
      { label: "at (UTC)", value: (c) => time(c.applied_at) },
      { label: "ms", value: (c) => number(c.duration_ms), class: "num" },
      { label: "sql", value: (c) => el("details", {}, el("summary", {}, c.checksum.slice(0, 12)), el("pre", {}, c.sql)) },
      { label: "error", value: (c) => c.error ? (c.error.message || JSON.stringify(c.error)) : "", class: "reason" },
    ], all, { empty: "no external updates yet (oldest first)" }),
    answer.next_cursor ? el("button", { type: "button", onclick: () => loadChanges(box, all, answer.next_cursor) },
      "More") : null);
  } catch (error) {
    fill(box, errorBox(error));
  }
}
