/* fetalbio review page: accept / correct / reject each measurement, HC, BPD, OFD and GA live in
 * mm while dragging, state in localStorage (keyed by the run id), export corrections.csv.
 * Inlined by fetalbio.reporting.review; needs no network. The formulas are those of
 * fetalbio.metrics.biometry (Ramanujan II, Hadlock 1984: constants from the page data) and
 * fetalbio.geometry.ellipse.ellipse_from_points. Points are image pixels, pixel centres at
 * integers (the SVG group is shifted by half a pixel). */
(function () {
  'use strict';
  const D = JSON.parse(document.getElementById('fb-data').textContent);
  const FULL = JSON.parse(document.getElementById('fb-full').textContent);
  const KEY = 'fetalbio-review:' + D.run_id;
  const cards = Array.from(document.querySelectorAll('.card'));
  const HANDLE_PX = 7; // handle radius on screen
  let S = load();
  let editing = -1;
  let drag = null;

  // ---------------------------------------------------------------- geometry
  function ramanujan(ofd, bpd) { // perimeter of the ellipse with full axes ofd, bpd
    const a = ofd / 2, b = bpd / 2, s = a + b;
    const h = s > 0 ? ((a - b) / s) ** 2 : 0;
    return Math.PI * s * (1 + 3 * h / (10 + Math.sqrt(4 - 3 * h)));
  }
  function gaWeeks(hcMm) {
    const c = D.hadlock_hc_cm, x = hcMm / 10;
    return c[0] + c[1] * x + c[2] * x ** 3;
  }
  const sub = (p, q) => [p[0] - q[0], p[1] - q[1]];
  const dot = (p, q) => p[0] * q[0] + p[1] * q[1];
  const len = (p) => Math.hypot(p[0], p[1]);
  const finite = (v) => typeof v === 'number' && isFinite(v);

  function ellipseFromPoints(p) { // centre: where the diameters cross; axes: half their lengths
    const d1 = sub(p[1], p[0]), d2 = sub(p[3], p[2]);
    const n1 = len(d1), n2 = len(d2), cross = d1[0] * d2[1] - d1[1] * d2[0];
    let c;
    if (n1 > 0 && n2 > 0 && Math.abs(cross) > Math.sin(5 * Math.PI / 180) * n1 * n2) {
      const w = sub(p[2], p[0]), s = (w[0] * d2[1] - w[1] * d2[0]) / cross;
      c = [p[0][0] + s * d1[0], p[0][1] + s * d1[1]];
    } else {
      c = [(p[0][0] + p[1][0] + p[2][0] + p[3][0]) / 4, (p[0][1] + p[1][1] + p[2][1] + p[3][1]) / 4];
    }
    const theta = Math.atan2(d1[1], d1[0]);
    const v = [-Math.sin(theta), Math.cos(theta)];
    return {cx: c[0], cy: c[1], a: n1 / 2, b: n2 / 2, theta: theta, sb: dot(d2, v) < 0 ? -1 : 1};
  }
  function axes(e) {
    const u = [Math.cos(e.theta), Math.sin(e.theta)];
    return [u, [-u[1] * e.sb, u[0] * e.sb]];
  }
  function pointsFromEllipse(e) {
    const [u, v] = axes(e), c = [e.cx, e.cy];
    const at = (d, k) => [c[0] + k * d[0], c[1] + k * d[1]];
    return [at(u, -e.a), at(u, e.a), at(v, -e.b), at(v, e.b)];
  }
  function measure(pts, px) {
    const ofdPx = len(sub(pts[1], pts[0])), bpdPx = len(sub(pts[3], pts[2]));
    const m = {ofdPx: ofdPx, bpdPx: bpdPx, hcPx: ramanujan(ofdPx, bpdPx), px: px};
    if (finite(px) && px > 0) {
      m.ofd = ofdPx * px; m.bpd = bpdPx * px; m.hc = ramanujan(m.ofd, m.bpd);
      const [lo, hi] = D.ga_hc_range_mm;
      m.ga = m.hc >= lo && m.hc <= hi ? gaWeeks(m.hc) : null;
    }
    return m;
  }

  // ---------------------------------------------------------------- state
  function load() {
    try {
      const s = JSON.parse(localStorage.getItem(KEY));
      if (s && s.items && Array.isArray(s.undo)) return s;
    } catch (e) { /* a fresh state */ }
    return {items: {}, cur: 0, undo: []};
  }
  function save() {
    const el = document.getElementById('saved');
    try {
      localStorage.setItem(KEY, JSON.stringify(S));
      el.textContent = 'saved in this browser (run ' + D.run_id + ')';
    } catch (e) {
      el.textContent = 'could not save in this browser: ' + e + ' (export to keep the review)';
    }
  }
  const rowOf = (i) => D.rows[i];
  const itemOf = (i) => S.items[rowOf(i).image_name] || {review: '', pts: null, note: ''};
  function predicted(i) {
    const r = rowOf(i), v = D.point_columns.map((c) => r[c]);
    if (!v.every(finite)) return null;
    return [[v[0], v[1]], [v[2], v[3]], [v[4], v[5]], [v[6], v[7]]];
  }
  function shownPoints(i) { // a failed row shows nothing until the reviewer draws one
    const it = itemOf(i);
    if (it.pts) return it.pts;
    return rowOf(i).flag === 'failed' ? null : predicted(i);
  }
  function setItem(i, change, undoable) {
    const before = itemOf(i);
    if (undoable !== false) S.undo = S.undo.concat([{i: i, before: JSON.stringify(before)}]).slice(-1000);
    S.items[rowOf(i).image_name] = Object.assign({}, before, change);
    save();
    render(i);
    progress();
  }
  function undo() {
    const u = S.undo.pop();
    if (!u) return;
    S.items[rowOf(u.i).image_name] = JSON.parse(u.before);
    save();
    go(u.i);
    render(u.i);
    progress();
  }

  // ---------------------------------------------------------------- drawing
  function svgOf(i) { return cards[i].querySelector('svg.layer'); }
  function el(parent, tag, attrs) {
    const e = document.createElementNS(parent.namespaceURI, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    parent.appendChild(e);
    return e;
  }
  function build(i) { // the SVG layer: ellipse, diameters, calipers, and the ellipse's handles
    const svg = svgOf(i);
    if (!svg || svg.querySelector('g.img')) return;
    const g = el(svg, 'g', {'class': 'img', transform: 'translate(0.5 0.5)'});
    el(g, 'ellipse', {'class': 'ell'});
    el(g, 'line', {'class': 'ofd'});
    el(g, 'line', {'class': 'bpd'});
    for (let k = 0; k < 4; k++) el(g, 'circle', {'class': 'pt ' + (k < 2 ? 'ofd-pt' : 'bpd-pt'), 'data-h': 'p' + k});
    el(g, 'rect', {'class': 'h', 'data-h': 'c'});
    el(g, 'rect', {'class': 'h', 'data-h': 'a', transform: ''});
    el(g, 'rect', {'class': 'h', 'data-h': 'b', transform: ''});
    el(g, 'circle', {'class': 'h rot', 'data-h': 'rot'});
  }
  function set(node, attrs) { for (const k in attrs) node.setAttribute(k, attrs[k]); }
  function drawHandles(g, e, r) {
    const [u, v] = axes(e), s = r * 1.6, off = r * 3.2; // the axis handles sit just outside the calipers
    const spots = {c: [e.cx, e.cy], a: [e.cx + (e.a + off) * u[0], e.cy + (e.a + off) * u[1]],
      b: [e.cx + (e.b + off) * v[0], e.cy + (e.b + off) * v[1]]};
    for (const k in spots) {
      const p = spots[k];
      set(g.querySelector('[data-h="' + k + '"]'), {x: p[0] - s / 2, y: p[1] - s / 2, width: s, height: s,
        transform: k === 'c' ? '' : 'rotate(45 ' + p[0] + ' ' + p[1] + ')'});
    }
    const q = Math.SQRT1_2;
    set(g.querySelector('[data-h="rot"]'), {cx: e.cx + q * (e.a * u[0] + e.b * v[0]), cy: e.cy + q * (e.a * u[1] + e.b * v[1]), r: r * 1.3});
  }
  function draw(i) {
    const svg = svgOf(i);
    if (!svg) return;
    const g = svg.querySelector('g.img'), pts = shownPoints(i);
    g.style.display = pts ? '' : 'none';
    if (!pts) return;
    const w = Number(cards[i].querySelector('.view').dataset.w);
    const r = HANDLE_PX * w / (svg.getBoundingClientRect().width || w);
    const e = ellipseFromPoints(pts);
    set(g.querySelector('.ell'), {cx: e.cx, cy: e.cy, rx: e.a, ry: e.b, transform: 'rotate(' + e.theta * 180 / Math.PI + ' ' + e.cx + ' ' + e.cy + ')'});
    set(g.querySelector('line.ofd'), {x1: pts[0][0], y1: pts[0][1], x2: pts[1][0], y2: pts[1][1]});
    set(g.querySelector('line.bpd'), {x1: pts[2][0], y1: pts[2][1], x2: pts[3][0], y2: pts[3][1]});
    g.querySelectorAll('.pt').forEach((c, k) => set(c, {cx: pts[k][0], cy: pts[k][1], r: r}));
    drawHandles(g, e, r);
  }

  // ---------------------------------------------------------------- values
  const f1 = (v) => v.toFixed(1);
  function gaLine(m) {
    if (!finite(m.hc)) return 'no GA: no HC in mm';
    if (m.ga === null) {
      const [lo, hi] = D.ga_hc_range_mm;
      return 'no GA: HC ' + m.hc.toFixed(0) + ' mm is outside the ' + lo + '–' + hi + " mm range of Hadlock's 1984 chart";
    }
    return 'GA ' + f1(m.ga) + ' weeks (Hadlock 1984, from HC)';
  }
  function correctedHtml(i, pts) {
    const row = rowOf(i), m = measure(pts, row.pixel_size_mm);
    const was = finite(row.hc_mm) ? 'model: HC ' + f1(row.hc_mm) + ' mm' : 'the model measured nothing';
    if (!finite(m.hc)) {
      return '<p><b class="hc">HC ' + f1(m.hcPx) + ' px</b> <span class="was">(corrected; no pixel size)</span><br>BPD ' +
        f1(m.bpdPx) + ' px &nbsp; OFD ' + f1(m.ofdPx) + ' px</p>';
    }
    return '<p><b class="hc">HC ' + f1(m.hc) + ' mm</b> <span class="was">(corrected; ' + was + ')</span><br>BPD ' +
      f1(m.bpd) + ' mm &nbsp; OFD ' + f1(m.ofd) + ' mm<br><span class="ga">' + gaLine(m) + '</span></p>';
  }
  const STATUS = {'': 'not reviewed', accepted: 'accepted', corrected: 'corrected', rejected: 'rejected'};
  function render(i) {
    const card = cards[i], it = itemOf(i), vals = card.querySelector('.values');
    if (vals.dataset.orig === undefined) vals.dataset.orig = vals.innerHTML;
    card.classList.remove('r-accepted', 'r-corrected', 'r-rejected');
    if (it.review) card.classList.add('r-' + it.review);
    card.querySelector('.status').textContent = STATUS[it.review || ''];
    vals.innerHTML = it.pts ? correctedHtml(i, it.pts) : vals.dataset.orig;
    const pts = shownPoints(i), m = pts ? measure(pts, rowOf(i).pixel_size_mm) : {};
    card.dataset.hcMm = finite(m.hc) ? m.hc : '';
    card.dataset.hcPx = finite(m.hcPx) ? m.hcPx : '';
    card.dataset.review = it.review || '';
    const note = card.querySelector('.note');
    if (document.activeElement !== note) note.value = it.note || '';
    draw(i);
  }
  function progress() {
    const n = {accepted: 0, corrected: 0, rejected: 0};
    D.rows.forEach((r, i) => { const v = itemOf(i).review; if (v) n[v] += 1; });
    const done = n.accepted + n.corrected + n.rejected;
    document.getElementById('progress').textContent = 'Reviewed ' + done + ' of ' + D.rows.length + ': ' +
      n.accepted + ' accepted, ' + n.corrected + ' corrected, ' + n.rejected + ' rejected.';
    document.body.dataset.reviewed = String(done);
  }

  // ---------------------------------------------------------------- actions
  function go(i) {
    i = Math.max(0, Math.min(cards.length - 1, i));
    if (editing >= 0 && editing !== i) setEditing(-1);
    cards.forEach((c) => c.classList.remove('current'));
    if (!cards.length) return;
    cards[i].classList.add('current');
    cards[i].scrollIntoView({block: 'nearest'});
    S.cur = i;
    save();
  }
  function accept(i) {
    setItem(i, {review: itemOf(i).pts ? 'corrected' : 'accepted'});
    setEditing(-1);
    go(i + 1);
  }
  function reject(i) {
    setItem(i, {review: 'rejected'});
    setEditing(-1);
    go(i + 1);
  }
  function startPoints(i) { // a failed image: an ellipse in the middle to drag onto the head
    const v = cards[i].querySelector('.view'), w = Number(v.dataset.w), h = Number(v.dataset.h);
    return pointsFromEllipse({cx: (w - 1) / 2, cy: (h - 1) / 2, a: w / 4, b: h / 4, theta: 0, sb: 1});
  }
  function setEditing(i) {
    if (editing >= 0) {
      const img = cards[editing].querySelector('img.thumb');
      cards[editing].classList.remove('editing');
      if (img && img.dataset.thumb) img.src = img.dataset.thumb;
      const old = editing;
      editing = -1;
      draw(old);
    }
    if (i < 0 || !svgOf(i)) return;
    editing = i;
    cards[i].classList.add('editing');
    const img = cards[i].querySelector('img.thumb');
    if (FULL[String(i)]) { img.dataset.thumb = img.dataset.thumb || img.src; img.src = FULL[String(i)]; }
    if (!shownPoints(i)) setItem(i, {pts: startPoints(i)});
    cards[i].scrollIntoView({block: 'nearest'});
    draw(i);
  }
  function toggleEdit(i) { setEditing(editing === i ? -1 : i); }
  function act(name, i) {
    if (name === 'accept') accept(i);
    else if (name === 'reject') reject(i);
    else if (name === 'edit') { go(i); toggleEdit(i); }
    else if (name === 'undo') undo();
  }

  // ---------------------------------------------------------------- dragging
  function imagePoint(svg, ev) {
    const m = svg.querySelector('g.img').getScreenCTM().inverse();
    const p = new DOMPoint(ev.clientX, ev.clientY).matrixTransform(m);
    return [p.x, p.y];
  }
  function onDown(ev) {
    const h = ev.target.closest('[data-h]'), card = ev.target.closest('.card');
    if (!h || !card || !card.classList.contains('editing')) return;
    const i = Number(card.dataset.index), svg = svgOf(i), pts = shownPoints(i);
    drag = {i: i, h: h.dataset.h, svg: svg, m0: imagePoint(svg, ev), p0: pts, e0: ellipseFromPoints(pts), moved: false};
    h.setPointerCapture(ev.pointerId);
    ev.preventDefault();
  }
  function dragged(d, m) { // the four points after moving handle d.h from d.m0 to m
    const dm = sub(m, d.m0), e = Object.assign({}, d.e0), [u, v] = axes(d.e0);
    if (d.h[0] === 'p') return d.p0.map((p, k) => (k === Number(d.h[1]) ? [p[0] + dm[0], p[1] + dm[1]] : p.slice()));
    if (d.h === 'c') return d.p0.map((p) => [p[0] + dm[0], p[1] + dm[1]]);
    if (d.h === 'a') e.a = Math.max(1, e.a + dot(dm, u));
    if (d.h === 'b') e.b = Math.max(1, e.b + dot(dm, v));
    if (d.h === 'rot') {
      const c = [e.cx, e.cy], p0 = sub(d.m0, c), p1 = sub(m, c);
      e.theta += Math.atan2(p1[1], p1[0]) - Math.atan2(p0[1], p0[0]);
    }
    return pointsFromEllipse(e);
  }
  function onMove(ev) {
    if (!drag) return;
    const pts = dragged(drag, imagePoint(drag.svg, ev));
    if (!drag.moved) { setItem(drag.i, {pts: pts, review: 'corrected'}); drag.moved = true; return; }
    S.items[rowOf(drag.i).image_name].pts = pts;
    render(drag.i);
  }
  function onUp() {
    if (!drag) return;
    drag = null;
    save();
  }

  // ---------------------------------------------------------------- lightbox
  function openFull(i) {
    const box = document.getElementById('lightbox'), svg = svgOf(i);
    if (!svg) return;
    box.querySelector('img').src = FULL[String(i)] || cards[i].querySelector('img.thumb').src;
    const layer = box.querySelector('svg.layer');
    layer.setAttribute('viewBox', svg.getAttribute('viewBox'));
    layer.setAttribute('preserveAspectRatio', 'none');
    layer.innerHTML = '';
    layer.appendChild(svg.querySelector('g.img').cloneNode(true));
    box.hidden = false;
  }
  function closeFull() { document.getElementById('lightbox').hidden = true; }

  // ---------------------------------------------------------------- export
  function cell(v) {
    if (v === null || v === undefined || (typeof v === 'number' && !isFinite(v))) return '';
    const s = String(v);
    return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }
  const r3 = (v) => (finite(v) ? Math.round(v * 1000) / 1000 : null);
  function corrections(i) { // the correction columns of one row (D.correction_columns)
    const it = itemOf(i), row = rowOf(i), out = {review: it.review || '', note: it.note || '', run_id: D.run_id};
    const pts = it.review === 'accepted' || it.review === 'corrected' ? shownPoints(i) : null;
    if (!pts) return out;
    D.point_columns.forEach((c, k) => { out['corrected_' + c] = r3(pts[k >> 1][k & 1]); });
    const e = ellipseFromPoints(pts), m = measure(pts, row.pixel_size_mm);
    const deg = ((e.theta * 180 / Math.PI) % 180 + 180) % 180;
    Object.assign(out, {ellipse_cx: r3(e.cx), ellipse_cy: r3(e.cy), ellipse_a_px: r3(e.a), ellipse_b_px: r3(e.b), ellipse_angle_deg: r3(deg),
      corrected_bpd_mm: r3(m.bpd), corrected_ofd_mm: r3(m.ofd), corrected_hc_mm: r3(m.hc), corrected_ga_weeks: m.ga ? r3(m.ga) : null});
    return out;
  }
  function csvText() {
    const cols = D.columns.concat(D.correction_columns.filter((c) => D.columns.indexOf(c) < 0));
    const lines = [cols.map(cell).join(',')];
    D.rows.forEach((row, i) => {
      const extra = corrections(i);
      lines.push(cols.map((c) => cell(c in extra ? extra[c] : D.correction_columns.indexOf(c) >= 0 ? null : row[c])).join(','));
    });
    return lines.join('\n') + '\n';
  }
  function exportCsv() {
    const a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob([csvText()], {type: 'text/csv'}));
    a.download = 'corrections.csv';
    document.body.appendChild(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 2000);
  }

  // ---------------------------------------------------------------- keys and clicks
  const KEYS = {
    j: () => go(S.cur + 1), ArrowDown: () => go(S.cur + 1), ArrowRight: () => go(S.cur + 1),
    k: () => go(S.cur - 1), ArrowUp: () => go(S.cur - 1), ArrowLeft: () => go(S.cur - 1),
    a: () => accept(S.cur), r: () => reject(S.cur), e: () => toggleEdit(S.cur), u: undo,
    n: () => cards[S.cur].querySelector('.note').focus(), f: () => openFull(S.cur), Enter: () => openFull(S.cur),
    Escape: () => setEditing(-1),
  };
  function onKey(ev) {
    const t = ev.target;
    if (t && (t.tagName === 'TEXTAREA' || t.tagName === 'INPUT')) { if (ev.key === 'Escape') t.blur(); return; }
    if (t && (t.tagName === 'BUTTON' || t.tagName === 'SUMMARY') && (ev.key === 'Enter' || ev.key === ' ')) return;
    if (!document.getElementById('lightbox').hidden) {
      if (ev.key === 'Escape' || ev.key === 'f' || ev.key === 'Enter') { closeFull(); ev.preventDefault(); }
      return;
    }
    if ((ev.ctrlKey || ev.metaKey) && ev.key.toLowerCase() === 'z') { undo(); ev.preventDefault(); return; }
    if (ev.ctrlKey || ev.metaKey || ev.altKey || !cards.length) return;
    const fn = KEYS[ev.key];
    if (fn) { fn(); ev.preventDefault(); }
  }
  function onClick(ev) {
    const card = ev.target.closest('.card');
    if (!card) return;
    const i = Number(card.dataset.index), b = ev.target.closest('button[data-act]');
    if (b) { act(b.dataset.act, i); return; }
    if (S.cur !== i) go(i);
    if (ev.target.closest('.view') && !card.classList.contains('editing')) openFull(i);
  }
  function onNote(ev) {
    const card = ev.target.closest('.card');
    if (!card || !ev.target.classList.contains('note')) return;
    const i = Number(card.dataset.index);
    S.items[rowOf(i).image_name] = Object.assign({}, itemOf(i), {note: ev.target.value});
    save();
  }

  function init() {
    cards.forEach((c, i) => { build(i); render(i); });
    progress();
    go(Math.min(S.cur || 0, cards.length - 1));
    document.addEventListener('keydown', onKey);
    document.addEventListener('click', onClick);
    document.addEventListener('input', onNote);
    document.addEventListener('pointerdown', onDown);
    document.addEventListener('pointermove', onMove);
    document.addEventListener('pointerup', onUp);
    document.addEventListener('pointercancel', onUp);
    document.getElementById('export').addEventListener('click', exportCsv);
    document.getElementById('lightbox').addEventListener('click', closeFull);
    window.addEventListener('resize', () => cards.forEach((c, i) => draw(i)));
    window.fetalbioReview = {csvText: csvText, state: () => S, ellipseFromPoints: ellipseFromPoints, measure: measure};
  }
  init();
  // rendered check (used by the browser tests): cards and decoded images
  window.addEventListener('load', () => {
    const imgs = Array.from(document.querySelectorAll('.card img'));
    document.body.dataset.cards = String(cards.length);
    document.body.dataset.imagesOk = String(imgs.filter((im) => im.complete && im.naturalWidth > 0).length);
    cards.forEach((c, i) => draw(i));
  });
})();
