//! The report as one self-contained HTML page: no network, no external scripts. The device
//! table is plain HTML; the plots (error per node along the graph, latency per device, the op x
//! device coverage matrix) are SVG drawn by an inline script from the embedded JSON report.
//! When drawing finishes the script sets `data-rendered="ok"` on `<body>`; a script error sets
//! `data-error` instead (what the browser test looks for).
use super::table;
use super::CheckReport;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = r#"
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 2em; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 0.85em; }
svg { background: #fff; border: 1px solid #ddd; }
svg text { font-size: 11px; fill: #333; }
.axis { stroke: #888; } .grid { stroke: #eee; }
.legend { font-size: 12px; }
"#;

const SCRIPT: &str = r#"
window.onerror = function (msg) { document.body.setAttribute('data-error', String(msg)); };
(function () {
  var data = JSON.parse(document.getElementById('report-data').textContent);
  var NS = 'http://www.w3.org/2000/svg';
  var COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#9467bd', '#8c564b', '#e377c2'];
  var STATUS = { pass: '#4caf50', host: '#8bc34a', partial: '#ffc107', fail: '#e53935', unsupported: '#9e9e9e', '-': '#f5f5f5' };
  function el(tag, attrs, parent, text) {
    var e = document.createElementNS(NS, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }
  function num(x) { return typeof x === 'number' ? x : (x === 'inf' ? Infinity : NaN); }

  function nodeErrorPlot() {
    var svg = document.getElementById('node-error');
    var W = 960, H = 320, L = 60, R = 20, T = 20, B = 40;
    var series = data.devices.filter(function (d) { return d.nodes && d.nodes.nodes.length; });
    if (!series.length) { el('text', { x: L, y: H / 2 }, svg, 'no node-by-node comparison in this report'); return; }
    var n = Math.max.apply(null, series.map(function (d) { return d.nodes.nodes.length; }));
    var lo = -20, hi = 0;
    var ys = series.map(function (d) {
      return d.nodes.nodes.map(function (nd) {
        var e = nd.metrics ? num(nd.metrics.nmse) : NaN;
        var y = e > 0 && isFinite(e) ? Math.log10(e) : (e === 0 ? lo : NaN);
        if (isFinite(y)) hi = Math.max(hi, Math.ceil(y));
        return y;
      });
    });
    hi = Math.min(hi, 4);
    function X(i) { return L + (n > 1 ? i * (W - L - R) / (n - 1) : 0); }
    function Y(y) { return T + (hi - Math.max(lo, Math.min(hi, y))) * (H - T - B) / (hi - lo); }
    for (var g = lo; g <= hi; g += 4) {
      el('line', { x1: L, x2: W - R, y1: Y(g), y2: Y(g), class: 'grid' }, svg);
      el('text', { x: L - 6, y: Y(g) + 4, 'text-anchor': 'end' }, svg, '1e' + g);
    }
    el('line', { x1: L, x2: L, y1: T, y2: H - B, class: 'axis' }, svg);
    el('line', { x1: L, x2: W - R, y1: H - B, y2: H - B, class: 'axis' }, svg);
    el('text', { x: (L + W) / 2, y: H - 8, 'text-anchor': 'middle' }, svg, 'node (graph order)');
    el('text', { x: 14, y: (T + H - B) / 2, transform: 'rotate(-90 14 ' + (T + H - B) / 2 + ')', 'text-anchor': 'middle' }, svg, 'NMSE vs reference');
    series.forEach(function (d, s) {
      var color = COLORS[s % COLORS.length];
      var pts = [];
      d.nodes.nodes.forEach(function (nd, i) {
        var y = ys[s][i];
        var bad = nd.status === 'FAIL' || nd.status === 'ERROR' || nd.status === 'unsupported';
        if (!isFinite(y) && !bad) return;
        var py = bad && !isFinite(y) ? T : Y(y);
        pts.push(X(i) + ',' + py);
        var c = el('circle', { cx: X(i), cy: py, r: bad ? 5 : 2.5, fill: bad ? '#e53935' : color, class: 'node-point' }, svg);
        el('title', {}, c, d.device + ': #' + nd.index + ' ' + nd.name + ' (' + nd.op + ') ' + nd.status + (nd.message ? ': ' + nd.message : ''));
      });
      el('polyline', { points: pts.join(' '), fill: 'none', stroke: color, 'stroke-width': 1, class: 'node-line' }, svg);
      el('text', { x: W - R - 150, y: T + 14 + 14 * s, fill: color, class: 'legend' }, svg, d.device + ' (' + d.nodes.mode + ')');
    });
  }

  function latencyPlot() {
    var svg = document.getElementById('latency');
    var bars = [];
    if (data.reference_latency) bars.push({ name: 'reference ' + data.reference, ms: num(data.reference_latency.median_ms) });
    data.devices.forEach(function (d) { if (d.latency) bars.push({ name: d.device, ms: num(d.latency.median_ms) }); });
    var W = 960, row = 26, L = 220, R = 90;
    svg.setAttribute('height', Math.max(40, bars.length * row + 20));
    if (!bars.length) { el('text', { x: 10, y: 24 }, svg, 'no latency measured'); return; }
    var max = Math.max.apply(null, bars.map(function (b) { return b.ms; })) || 1;
    bars.forEach(function (b, i) {
      var y = 10 + i * row;
      el('text', { x: L - 8, y: y + 15, 'text-anchor': 'end' }, svg, b.name);
      var r = el('rect', { x: L, y: y, width: Math.max(1, (W - L - R) * b.ms / max), height: row - 6, fill: COLORS[i % COLORS.length], class: 'lat-bar' }, svg);
      el('title', {}, r, b.name + ': ' + b.ms.toFixed(3) + ' ms');
      el('text', { x: L + Math.max(1, (W - L - R) * b.ms / max) + 6, y: y + 15 }, svg, b.ms.toFixed(3) + ' ms');
    });
  }

  function coverageMatrix() {
    var svg = document.getElementById('coverage');
    var cov = data.coverage, cw = 110, rh = 18, L = 200, T = 24;
    svg.setAttribute('width', L + cw * cov.devices.length + 20);
    svg.setAttribute('height', T + rh * cov.ops.length + 10);
    cov.devices.forEach(function (d, j) { el('text', { x: L + j * cw + cw / 2, y: 16, 'text-anchor': 'middle' }, svg, d); });
    cov.ops.forEach(function (row, i) {
      var y = T + i * rh;
      el('text', { x: L - 8, y: y + 13, 'text-anchor': 'end' }, svg, row.op);
      row.cells.forEach(function (c, j) {
        var r = el('rect', { x: L + j * cw, y: y, width: cw - 2, height: rh - 2, fill: STATUS[c.status] || '#fff', class: 'cov-cell' }, svg);
        el('title', {}, r, row.op + ' on ' + cov.devices[j] + ': ' + c.status + ' (pass ' + c.pass + ', fail ' + c.fail + ', unsupported ' + c.unsupported + ', host ' + c.host + ')');
        el('text', { x: L + j * cw + cw / 2, y: y + 13, 'text-anchor': 'middle' }, svg, c.status);
      });
    });
  }

  nodeErrorPlot();
  latencyPlot();
  coverageMatrix();
  if (!document.body.hasAttribute('data-error')) document.body.setAttribute('data-rendered', 'ok');
})();
"#;

/// The whole page.
pub fn to_html(r: &CheckReport, show_kernel: bool) -> String {
    // '<' inside the JSON would let a value close the script element.
    let data = super::json::to_json(r).to_string().replace('<', "\\u003c");
    let verdict = if r.exit_code() == 0 {
        "all devices within tolerance"
    } else {
        "mismatch"
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>kuaxin check: {title}</title><style>{STYLE}</style></head>\n<body>\n\
<h1>kuaxin check: {title}</h1>\n<p>Verdict: <b>{verdict}</b></p>\n<pre>{table}</pre>\n<pre>{failures}</pre>\n\
<h2>Error per node along the graph</h2>\n<svg id=\"node-error\" width=\"960\" height=\"320\" role=\"img\"></svg>\n\
<h2>Latency per device (median)</h2>\n<svg id=\"latency\" width=\"960\" height=\"60\" role=\"img\"></svg>\n\
<h2>Op x device coverage</h2>\n<svg id=\"coverage\" width=\"400\" height=\"60\" role=\"img\"></svg>\n\
<script type=\"application/json\" id=\"report-data\">{data}</script>\n<script>{SCRIPT}</script>\n</body></html>\n",
        title = esc(&r.model),
        table = esc(&(table::device_table(r) + &table::fusion_table(r))),
        failures = esc(&table::failures(r, show_kernel)),
    )
}
