// Building the page. Everything the API says becomes a text node (textContent), never markup:
// a ledger `reason` is whatever a caller sent, and must show as the characters it is.

/** el("td", {class: "num", onclick: fn}, "text", node, ...): an element whose string children
 *  become text nodes. Attribute values are set as values, never parsed as HTML. */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  setAttributes(node, attrs);
  append(node, children);
  return node;
}

export function setAttributes(node, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      node.className = value;
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
}

export function append(node, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Replace a node's children. */
export function fill(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

/** A table: columns are {label, value: row => text or node, class?}. */
export function table(columns, rows, options = {}) {
  const head = el("tr", {}, columns.map((c) => el("th", { class: c.class }, c.label)));
  const body = rows.map((row) => el("tr", options.rowAttrs ? options.rowAttrs(row) : {},
    columns.map((c) => el("td", { class: c.class }, c.value(row)))));
  if (!rows.length) {
    body.push(el("tr", {}, el("td", { colspan: columns.length, class: "empty" }, options.empty || "nothing here")));
  }
  return el("table", { class: options.class || "data" }, el("thead", {}, head), el("tbody", {}, body));
}

/** An ISO instant from the API as "YYYY-MM-DD HH:MM:SS" UTC (the API answers in UTC). */
export function time(iso) {
  if (!iso) return "—";
  const at = new Date(iso);
  return Number.isNaN(at.getTime()) ? String(iso) : at.toISOString().slice(0, 19).replace("T", " ");
}

export function number(value) {
  return value === null || value === undefined ? "—" : Number(value).toLocaleString("en-US");
}

/** A signed amount, "+10" or "-5". */
export function signed(value) {
  return (value > 0 ? "+" : "") + number(value);
}

/** An error as the API words it (its message), with its code for the curious. */
export function errorText(error) {
  const parts = [error.message || String(error)];
  if (error.code) parts.push("(" + error.code + (error.status ? ", HTTP " + error.status : "") + ")");
  return parts.join(" ");
}

export function errorBox(error) {
  return el("p", { class: "error", role: "alert" }, errorText(error));
}

/** A status line a view keeps and rewrites: ok, error or busy. */
export function statusLine() {
  const node = el("p", { class: "status", "aria-live": "polite" });
  node.ok = (text) => { node.className = "status ok"; node.textContent = text; };
  node.error = (error) => { node.className = "status error"; node.textContent = errorText(error); };
  node.busy = (text) => { node.className = "status busy"; node.textContent = text; };
  node.clear = () => { node.className = "status"; node.textContent = ""; };
  return node;
}

export function section(title, ...children) {
  return el("section", { class: "card" }, el("h2", {}, title), ...children);
}

/** A button for an action the signed-in role may lack: still clickable (the API decides and
 *  its refusal is shown), but marked so that the operator knows before trying. */
export function actionButton(label, permission, ctx, onclick, attrs = {}) {
  const lacks = !ctx.can(permission);
  return el("button", {
    type: "button", onclick, ...attrs,
    class: ((attrs.class || "") + (lacks ? " lacks" : "")).trim(),
    title: lacks ? `your role (${ctx.who.role}) lacks ${permission}: the API will refuse it` : null,
  }, label);
}

/** A note shown on a view whose data the role may not read. */
export function lacksNote(ctx, permission) {
  return ctx.can(permission) ? null
    : el("p", { class: "note" }, `Your role (${ctx.who.role}) lacks ${permission}; the API will refuse what needs it.`);
}

/** "2026-01-31" or "2026-01-31T10:00:00Z" from a form field, as the API's RFC 3339 instant;
 *  anything else is passed through for the API to judge (and word the error). */
export function instant(text) {
  const value = text.trim();
  if (/^\d{4}-\d{2}-\d{2}$/.test(value)) return value + "T00:00:00Z";
  return value;
}
