// Charts drawn as SVG elements (createElementNS): no library, nothing inline for the CSP to
// refuse, and every label a text node.

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 1200; // about the width it is shown at, so labels keep their CSS size
const HEIGHT = 240;
const PAD = { left: 64, right: 16, top: 24, bottom: 30 };

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function frame(label) {
  const root = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: "chart", role: "img", "aria-label": label });
  root.append(svg("title", {}, label));
  return root;
}

/** Round numbers for an axis from 0 to at least `max` (whole ones for counts). */
function ticks(max, whole) {
  if (max <= 0) return [0, 1];
  const raw = max / 4;
  const step = Math.pow(10, Math.floor(Math.log10(raw)));
  let nice = [1, 2, 5, 10].map((m) => m * step).find((s) => s >= raw);
  if (whole) nice = Math.max(1, Math.round(nice));
  const out = [];
  for (let v = 0; v < max + nice; v += nice) out.push(v);
  return out;
}

function yAxis(root, top, label, whole) {
  const values = ticks(top, whole);
  const max = values[values.length - 1];
  const y = (v) => PAD.top + (HEIGHT - PAD.top - PAD.bottom) * (1 - v / max);
  for (const v of values) {
    root.append(svg("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: y(v), y2: y(v), class: "grid" }));
    root.append(svg("text", { x: PAD.left - 6, y: y(v) + 4, class: "tick", "text-anchor": "end" },
      v.toLocaleString("en-US")));
  }
  root.append(svg("text", { x: 4, y: 11, class: "axis-label" }, label));
  return y;
}

/** An instant as a label, as fine as the chart's span needs. */
function timeLabel(ms, span) {
  const iso = new Date(ms).toISOString();
  if (span < 3600e3) return iso.slice(11, 19);
  if (span < 2 * 86400e3) return iso.slice(5, 16).replace("T", " ");
  return iso.slice(0, 10);
}

/** A step line of a balance over time: points are {at: ISO instant, credits}, oldest first,
 *  each the balance as of its instant. data-last holds the newest balance (tests read it). */
export function balanceChart(points, label) {
  const root = frame(label);
  if (!points.length) {
    root.append(svg("text", { x: WIDTH / 2, y: HEIGHT / 2, class: "tick", "text-anchor": "middle" }, "no data"));
    return root;
  }
  const series = points.map((p) => ({ t: Date.parse(p.at), v: p.credits }));
  const t0 = series[0].t;
  const t1 = Math.max(series[series.length - 1].t, t0 + 1);
  const x = (t) => PAD.left + (WIDTH - PAD.left - PAD.right) * ((t - t0) / (t1 - t0));
  const y = yAxis(root, Math.max(...series.map((p) => p.v)), "credits", true);
  for (const [t, anchor] of [[t0, "start"], [(t0 + t1) / 2, "middle"], [t1, "end"]]) {
    root.append(svg("text", { x: x(t), y: HEIGHT - 8, class: "tick", "text-anchor": anchor }, timeLabel(t, t1 - t0)));
  }
  // Each point is the balance at the end of its span: hold the previous value until then.
  let d = `M ${x(t0)} ${y(series[0].v)}`;
  for (let i = 1; i < series.length; i += 1) {
    d += ` H ${x(series[i].t)} V ${y(series[i].v)}`;
  }
  root.append(svg("path", { d, class: "line" }));
  const last = series[series.length - 1];
  const dot = svg("circle", { cx: x(last.t), cy: y(last.v), r: 4, class: "dot" });
  dot.append(svg("title", {}, `${new Date(last.t).toISOString().slice(0, 19).replace("T", " ")} UTC: ` +
    `${last.v.toLocaleString("en-US")} credits`));
  root.append(dot);
  root.setAttribute("data-last", String(last.v));
  root.setAttribute("data-points", String(series.length));
  return root;
}

/** Bars, one per day: days are {date: "YYYY-MM-DD", value (null: no bar), status, title};
 *  `whole`: the values are counts. */
export function dayBars(days, label, unit, whole) {
  const root = frame(label);
  const y = yAxis(root, Math.max(0, ...days.map((d) => d.value || 0)), unit, whole);
  const width = (WIDTH - PAD.left - PAD.right) / Math.max(days.length, 1);
  days.forEach((d, i) => {
    const left = PAD.left + i * width;
    if (d.value !== null && d.value !== undefined) {
      const top = y(d.value);
      const bar = svg("rect", { x: left + width * 0.15, y: top, width: Math.max(width * 0.7, 1),
        height: Math.max(y(0) - top, 1), class: "bar " + (d.status || "") });
      bar.append(svg("title", {}, d.title));
      root.append(bar);
    }
    if (i === 0 || i === days.length - 1 || i % 15 === 0) {
      root.append(svg("text", { x: left + width / 2, y: HEIGHT - 8, class: "tick", "text-anchor": "middle" },
        d.date.slice(5)));
    }
  });
  return root;
}
