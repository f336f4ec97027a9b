// The Poincare disk of the atlas: draws a view (hierloc.viz.atlas_view.focus_view),
// re-centres on a click by a Mobius transformation of the disk (animated), with a
// breadcrumb and Back. Runs as gr.HTML's js_on_load: `element`, `props`, `server`,
// `trigger` and `watch` are given by Gradio. The server computes every view exactly;
// this code only draws it and animates between two views along the isometry the server
// names (view.move: z -> e^{i rot} (z - a) / (1 - conj(a) z)).
const COLORS = {"-1": "#475569", "0": "#2563eb", "1": "#16a34a", "2": "#ea580c", "3": "#dc2626"};
const LEVEL_NAMES = {"-1": "the Earth", "0": "country", "1": "region", "2": "sub-region", "3": "city"};
const NS = "http://www.w3.org/2000/svg";
const ANIMATE_MS = 650;
let shown = null;        // the view on screen
let visited = [];        // focus keys to go Back to
let busy = false;

function el(tag, attrs, parent) {
  const e = document.createElementNS(NS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(e);
  return e;
}

function host() {
  let root = element.querySelector(".hl-atlas");
  if (root) return root;
  element.innerHTML = "";
  root = document.createElement("div");
  root.className = "hl-atlas";
  root.innerHTML =
    '<div class="hl-atlas-bar"><button type="button" class="hl-atlas-back" disabled title="Back to the previous place">&#8592; Back</button>' +
    '<span class="hl-atlas-crumbs"></span></div>' +
    '<div class="hl-atlas-depth" role="status"></div>' +
    '<div class="hl-atlas-stage"><svg class="hl-atlas-svg" viewBox="-1.08 -1.08 2.16 2.16" role="img"></svg>' +
    '<div class="hl-atlas-tip" hidden></div></div>' +
    '<div class="hl-atlas-caption"></div>';
  element.appendChild(root);
  root.querySelector(".hl-atlas-back").addEventListener("click", () => {
    if (visited.length) refocus(visited.pop(), false);
  });
  return root;
}

// ---- complex numbers and the disk --------------------------------------------------
function mobius(x, y, ax, ay, rot) {
  // e^{i rot} (z - a) / (1 - conj(a) z)
  const nx = x - ax, ny = y - ay;
  const dx = 1 - (ax * x + ay * y), dy = -(ax * y - ay * x);
  const den = dx * dx + dy * dy || 1e-300;
  const qx = (nx * dx + ny * dy) / den, qy = (ny * dx - nx * dy) / den;
  const c = Math.cos(rot), s = Math.sin(rot);
  return [c * qx - s * qy, s * qx + c * qy];
}

function moveAt(move, t) {
  // the isometry a fraction t of the way: translate along the geodesic 0 -> a, turn t * rot
  const [ax, ay] = move.a;
  const r = Math.hypot(ax, ay);
  const k = r > 0 ? Math.tanh(t * Math.atanh(Math.min(r, 1 - 1e-15))) / r : 0;
  return (x, y) => mobius(x, y, ax * k, ay * k, t * move.rot);
}

function arcPath(p, q) {
  // geodesic between two points of the unit disk, in screen coordinates (y down)
  const [px, py] = p, [qx, qy] = q;
  const cross = px * qy - py * qx;
  if (Math.abs(cross) < 1e-9) return `M${px},${-py}L${qx},${-qy}`;
  // the circle through p and q orthogonal to the rim: 2 c.p = 1 + |p|^2, 2 c.q = 1 + |q|^2
  const bp = (1 + px * px + py * py) / 2, bq = (1 + qx * qx + qy * qy) / 2;
  const cx = (bp * qy - bq * py) / cross, cy = (px * bq - qx * bp) / cross;
  const R = Math.hypot(px - cx, py - cy);
  if (!isFinite(R) || R > 1e4) return `M${px},${-py}L${qx},${-qy}`;
  const sweep = ((px - cx) * (qy - cy) - (py - cy) * (qx - cx)) > 0 ? 0 : 1;
  return `M${px},${-py}A${R},${R} 0 0 ${sweep} ${qx},${-qy}`;
}

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}

// ---- drawing ----------------------------------------------------------------------
function radius(P, i, x, y) {
  const base = P.role[i] === "focus" ? 0.045 : P.level[i] < 0 ? 0.03 : [0.032, 0.026, 0.021, 0.017][P.level[i]];
  const shrink = 1 - (x * x + y * y);  // a disk of fixed hyperbolic size shrinks toward the rim
  const r = base * Math.max(shrink, 0) + 0.004;
  return P.role[i] === "focus" ? Math.max(r, 0.03) : r;
}

function draw(view, xy, photoXY, still) {
  const root = host();
  const svg = root.querySelector(".hl-atlas-svg");
  svg.innerHTML = "";
  if (!view || !view.points) {
    svg.setAttribute("aria-label", "empty");
    return;
  }
  const P = view.points;
  svg.setAttribute("aria-label", view.caption || "Poincare disk");
  el("circle", {cx: 0, cy: 0, r: 1, class: "hl-atlas-rim"}, svg);
  const edges = el("g", {class: "hl-atlas-edges"}, svg);
  for (let i = 0; i < P.key.length; i++) {
    const j = P.parent[i];
    if (j < 0) continue;
    el("path", {d: arcPath(xy[j], xy[i]), class: "hl-atlas-edge", stroke: COLORS[String(P.level[i])]}, edges);
  }
  if (view.photo && photoXY) {
    const arcs = el("g", {class: "hl-atlas-photo-arcs"}, svg);
    const want = new Set(view.photo.path);
    const cands = new Set(view.photo.candidates);
    for (let i = 0; i < P.key.length; i++) {
      if (!want.has(P.key[i]) && !cands.has(P.key[i])) continue;
      if (cands.has(P.key[i]) && !want.has(P.key[i]) && P.level[i] !== 3) continue;
      el("path", {d: arcPath(photoXY, xy[i]), class: want.has(P.key[i]) ? "hl-atlas-arc" : "hl-atlas-arc hl-cand",
                  stroke: COLORS[String(P.level[i])]}, arcs);
    }
  }
  if (view.photo && photoXY) {  // under the places, so that a place under the star stays clickable
    el("circle", {cx: photoXY[0], cy: -photoXY[1], r: 0.05, class: "hl-atlas-photo-hit"}, svg);
  }
  const dots = el("g", {class: "hl-atlas-dots"}, svg);
  const labels = el("g", {class: "hl-atlas-labels"}, svg);
  const push = still ? staggered(P, xy) : {};
  for (let i = 0; i < P.key.length; i++) {
    const [x, y] = xy[i];
    const c = el("circle", {cx: x, cy: -y, r: radius(P, i, x, y), fill: COLORS[String(P.level[i])],
                            class: "hl-atlas-pt hl-role-" + P.role[i], "data-key": P.key[i], "data-level": P.level[i],
                            "data-i": i}, dots);
    if (P.role[i] === "focus") c.setAttribute("data-focus", "1");
    if (still && P.label[i]) {
      const n = Math.hypot(x, y);
      const off = radius(P, i, x, y) + 0.012 + (push[i] || 0);
      const ux = n > 1e-6 ? x / n : 0, uy = n > 1e-6 ? y / n : 1;
      const tx = x + ux * off, ty = y + uy * off;
      const t = el("text", {x: tx, y: -ty, class: "hl-atlas-label" + (P.role[i] === "focus" ? " hl-focus-label" : ""),
                            "text-anchor": n < 0.05 || Math.abs(uy) > 0.8 ? "middle" : (ux >= 0 ? "start" : "end"),
                            "dominant-baseline": uy > 0.5 ? "auto" : (uy < -0.5 ? "hanging" : "middle")}, labels);
      t.textContent = P.name[i];
    }
  }
  if (view.photo && photoXY) {
    const [x, y] = photoXY;
    const star = [];
    for (let k = 0; k < 10; k++) {
      const a = Math.PI / 2 + k * Math.PI / 5, rr = k % 2 ? 0.022 : 0.055;
      star.push(`${x + rr * Math.cos(a)},${-(y + rr * Math.sin(a))}`);
    }
    el("polygon", {points: star.join(" "), class: "hl-atlas-photo", "data-x": x, "data-y": y}, svg);
  }
}

function staggered(P, xy) {
  // labels of neighbours a hair apart in angle (near the rim): every other one further out
  const out = {};
  const idx = [];
  for (let i = 0; i < P.key.length; i++) {
    const [x, y] = xy[i];
    if (P.label[i] && Math.hypot(x, y) > 0.5) idx.push([Math.atan2(y, x), i]);
  }
  idx.sort((a, b) => a[0] - b[0]);
  let pushed = false;
  for (let k = 1; k < idx.length; k++) {
    // near the top and bottom the names run along the rim, so they need a wider gap
    const a = idx[k][0], wide = Math.abs(Math.sin(a)) > 0.6 ? 0.22 : 0.09;
    const close = a - idx[k - 1][0] < wide;
    if (close && !pushed) { out[idx[k][1]] = 0.075; pushed = true; } else pushed = false;
  }
  return out;
}

function drawStill(view) {
  const root = host();
  shown = view;
  if (!view || !view.points) {
    root.querySelector(".hl-atlas-crumbs").textContent = "";
    root.querySelector(".hl-atlas-depth").textContent = "";
    root.querySelector(".hl-atlas-caption").textContent = (view && view.message) || "";
    draw(null);
    return;
  }
  const P = view.points;
  const xy = P.x.map((x, i) => [x, P.y[i]]);
  draw(view, xy, view.photo ? [view.photo.x, view.photo.y] : null, true);
  const crumbs = root.querySelector(".hl-atlas-crumbs");
  crumbs.innerHTML = view.crumbs.map((c, i) =>
    `<a href="#" class="hl-crumb" data-key="${esc(c.key)}" style="color:${COLORS[String(["earth", "country", "region", "sub-region", "city"].indexOf(c.level) - 1)]}">${esc(c.name)}</a>`
  ).join(' <span class="hl-crumb-sep">&rsaquo;</span> ');
  crumbs.querySelectorAll(".hl-crumb").forEach((a) => a.addEventListener("click", (ev) => {
    ev.preventDefault();
    if (a.dataset.key !== view.focus) refocus(a.dataset.key, true);
  }));
  root.querySelector(".hl-atlas-depth").textContent = view.photo ? "The photo: " + view.photo.text : "";
  root.querySelector(".hl-atlas-caption").textContent = view.caption || "";
  root.querySelector(".hl-atlas-back").disabled = visited.length === 0;
  bindHover(view);
}

function animate(from, to) {
  // the old view moved by the isometry to the new one, then the new view drawn exactly
  const move = to.move;
  if (!from || !from.points || !move) return drawStill(to);
  const P = from.points;
  const t0 = performance.now();
  return new Promise((resolve) => {
    function frame(now) {
      const t = Math.min(1, (now - t0) / ANIMATE_MS);
      const e = t < 0.5 ? 2 * t * t : 1 - Math.pow(-2 * t + 2, 2) / 2;  // ease in and out
      const f = moveAt(move, e);
      const xy = P.x.map((x, i) => f(x, P.y[i]));
      const pxy = from.photo ? f(from.photo.x, from.photo.y) : null;
      draw(from, xy, pxy, false);
      if (t < 1) requestAnimationFrame(frame);
      else { drawStill(to); resolve(); }
    }
    requestAnimationFrame(frame);
  });
}

function place(tip, root, ev) {
  const box = root.querySelector(".hl-atlas-stage").getBoundingClientRect();
  tip.style.left = (ev.clientX - box.left + 14) + "px";
  tip.style.top = (ev.clientY - box.top + 10) + "px";
}

function bindHover(view) {
  const root = host();
  const tip = root.querySelector(".hl-atlas-tip");
  const svg = root.querySelector(".hl-atlas-svg");
  const P = view.points;
  const hit = svg.querySelector(".hl-atlas-photo-hit");
  if (hit && view.photo) {
    hit.addEventListener("mouseenter", () => {
      tip.innerHTML = `<b>The photo</b>: the weighted median of its answer's cities<br>` +
        `distance from the Earth's point: <b>${view.photo.rho.toFixed(3)}</b>` +
        (view.focus !== "earth" ? `<br>distance from ${esc(view.focus_name)}: <b>${view.photo.d.toFixed(3)}</b>` : "") +
        `<br>${esc(view.photo.text)}`;
      tip.hidden = false;
    });
    hit.addEventListener("mousemove", (ev) => place(tip, root, ev));
    hit.addEventListener("mouseleave", () => { tip.hidden = true; });
  }
  svg.querySelectorAll(".hl-atlas-pt").forEach((c) => {
    const i = Number(c.dataset.i);
    c.addEventListener("mouseenter", () => {
      let html = `<b>${esc(P.name[i])}</b> <span class="hl-tip-level">${esc(LEVEL_NAMES[String(P.level[i])])}</span>`;
      if (P.role[i] !== "focus") html += `<br>distance from ${esc(view.focus_name)}: <b>${P.d[i].toFixed(3)}</b>`;
      if (P.dp) html += `<br>distance from the photo: <b>${P.dp[i].toFixed(3)}</b>`;
      if (P.kids[i]) html += `<br>${P.kids[i].toLocaleString()} ${P.level[i] < 0 ? "countries" : "children"}; click to bring it to the centre`;
      tip.innerHTML = html;
      tip.hidden = false;
    });
    c.addEventListener("mousemove", (ev) => place(tip, root, ev));
    c.addEventListener("mouseleave", () => { tip.hidden = true; });
    c.addEventListener("click", () => {
      tip.hidden = true;
      if (P.key[i] !== view.focus) refocus(P.key[i], true);
    });
  });
}

async function refocus(key, remember) {
  if (busy || !shown || !shown.state) return;
  busy = true;
  try {
    const next = await server.atlas_refocus(JSON.stringify(shown.state), key);
    if (!next || !next.points) return;
    if (remember) visited.push(shown.focus);
    const from = shown;
    shown = next;
    props.value = next;
    await animate(from, next);
    trigger("change");
  } finally {
    busy = false;
  }
}

function fromPython() {
  const v = props.value;
  if (v === shown) return;
  if (v && v.points && shown && shown.points && v.move && v.move.from === shown.focus) {
    visited.push(shown.focus);
    const from = shown;
    shown = v;
    animate(from, v);
  } else {
    visited = [];
    drawStill(v && v.points ? v : (v || null));
  }
}

host();
fromPython();
watch("value", fromPython);
