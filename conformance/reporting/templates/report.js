// sepconv-conformance report: the results table (filter, sort) and the detail view of one result.
// Vanilla JS, no network. Every string from the data is put into the page with textContent (via `el`),
// never parsed as HTML, so a case description or error message cannot inject markup or script.
// The data block is gzip-compressed JSON in base64 (html_report.embedded_data): it is inflated with the
// browser's DecompressionStream, then the page is built; <body data-ready="1"> marks that it is done.
(async function () {
  "use strict";
  let data;
  try {
    const base64 = document.getElementById("report-data").textContent.trim();
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    const inflated = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    data = JSON.parse(await new Response(inflated).text());
  } catch (error) {
    document.getElementById("results").prepend(el("p", { className: "bad", text: "This browser cannot read the " +
      "report's compressed data (" + error + "); it needs DecompressionStream (Chromium 80, Firefox 113, Safari 16.4 " +
      "or later). Everything is also in results.json." }));
    document.body.dataset.ready = "error";
    return;
  }
  const rows = data.rows;
  const cases = data.cases;
  const FAILING = new Set(data.failing);
  const SVGNS = "http://www.w3.org/2000/svg";
  const AXIS_NAMES = { N: "batch", H: "rows", W: "columns", C: "output channels" };
  const AXIS_NAME = { N: "batch element", H: "row", W: "column", C: "output channel" };

  // --- small helpers ------------------------------------------------------------------------------
  function num(v) {  // results.json writes non-finite floats as the strings "inf", "-inf", "nan"
    if (typeof v === "number") return v;
    if (v === "inf") return Infinity;
    if (v === "-inf") return -Infinity;
    if (v === "nan" || v === undefined || v === null || v === "") return NaN;
    return Number(v);
  }
  function fmt(v) {
    const x = num(v);
    if (Number.isNaN(x)) return v === undefined || v === null ? "" : "nan";
    if (!Number.isFinite(x)) return x > 0 ? "inf" : "-inf";
    if (x === 0) return "0";
    const a = Math.abs(x);
    return a >= 1e-3 && a < 1e5 ? String(Number(x.toPrecision(3))) : x.toExponential(2);
  }
  function exact(v) {  // all the digits: for expected/got values, where the last digit matters
    const x = num(v);
    return Number.isNaN(x) ? "nan" : Number.isFinite(x) ? String(x) : (x > 0 ? "inf" : "-inf");
  }
  function el(tag, props, children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === "text") node.textContent = value;
      else if (key === "className") node.className = value;
      else node.setAttribute(key, value);
    }
    for (const child of children || []) {
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }
  function svgEl(tag, attrs, tooltip) {
    const node = document.createElementNS(SVGNS, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    if (tooltip) {
      const title = document.createElementNS(SVGNS, "title");
      title.textContent = tooltip;
      node.appendChild(title);
    }
    return node;
  }
  function svgText(x, y, text, anchor) {
    const node = svgEl("text", { x: x, y: y, "text-anchor": anchor || "start" });
    node.textContent = text;
    return node;
  }
  // A backend spec as the table shows it: "pkg.module:function" and "/path/to/file.py:function" lose
  // their leading path ("module:function", "file.py:function"), which is the part that tells them apart.
  function shortBackend(spec) {
    const colon = spec.indexOf(":");
    if (colon < 0 || !/[./]/.test(spec.slice(0, colon))) return spec;  // "numpy", "cmd:...", "tensorflow:/GPU:0"
    const where = spec.slice(0, colon);
    const base = where.endsWith(".py") ? where.split("/").pop() : where.split(/[./]/).pop();
    return base + spec.slice(colon);
  }
  function joined(list) { return Array.isArray(list) ? list.join("x") : String(list === undefined ? "" : list); }
  function params(row) { return cases[row.case] || {}; }
  function metric(row, key) { return num((row.metrics || {})[key]); }
  // The error column's value: NaN/Inf where the reference has none (or the reverse) is as bad as it gets,
  // whatever the finite elements' largest error (html_report._severity orders the page the same way).
  function severity(row) { return metric(row, "nonfinite_mismatches") > 0 ? Infinity : metric(row, "max_error_in_limits"); }
  function severityText(row) {
    if (metric(row, "nonfinite_mismatches") > 0) return "NaN/Inf";
    const value = metric(row, "max_error_in_limits");
    return value === Infinity ? "not exact" : fmt(value);  // limit 0 (integer data): any error, infinitely off
  }

  // The maps' unit (details.scale): "limit" (error / limit: 1 is the limit), or "bound" where every
  // limit is zero (exact integer data: any error fails) and the maps show error / B (the bound) instead.
  // low..high: the log10 range of the charts.
  const SCALES = {
    limit: { exact: false, unit: "the limit", label: "error / limit", low: -4, high: 4 },
    bound: { exact: true, unit: "B", label: "error / B", low: -8, high: 0 },
  };
  let scale = SCALES.limit;
  // Severity -> colour: within the limit light to mid blue, over it orange to dark red (with "bound"
  // every error is over), a wrong NaN/Inf purple, no error near white.
  function mix(a, b, t) {
    t = Math.min(1, Math.max(0, t));
    return "rgb(" + a.map((c, i) => Math.round(c + (b[i] - c) * t)).join(",") + ")";
  }
  function colour(v) {
    const s = num(v);
    if (Number.isNaN(s) || s === 0) return "#f4f6f8";
    if (!Number.isFinite(s)) return "#5b0a78";
    const l = Math.log10(s);
    if (!scale.exact && s <= 1) return mix([226, 236, 246], [90, 140, 205], (l + 4) / 4);
    return mix([255, 196, 70], [165, 0, 0], scale.exact ? (l + 7) / 7 : l / 4);
  }
  function over(v) { return scale.exact ? num(v) > 0 : num(v) > 1; }
  function range(start, size, length) {
    const end = Math.min(start + size, length) - 1;
    return end > start ? start + ".." + end : String(start);
  }

  // --- the table ------------------------------------------------------------------------------------
  const COLUMNS = [
    { key: "status", label: "status", value: (r) => (FAILING.has(r.status) ? "0" : "1") + r.status },
    { key: "case", label: "case", value: (r) => r.case },
    { key: "backend", label: "backend", value: (r) => r.backend },
    { key: "dtype", label: "dtype", value: (r) => params(r).dtype || "" },
    { key: "layout", label: "layout", value: (r) => params(r).data_format || "" },
    { key: "error", label: "error/limit", numeric: true, value: severity,
      title: "the worst element's error in units of its limit (over 1 fails); NaN/Inf mismatches and exact-integer " +
        "failures (limit 0) count as infinitely bad" },
    { key: "abs", label: "abs error", title: "max absolute error", numeric: true, value: (r) => metric(r, "max_abs_error") },
    { key: "rel", label: "rel error", title: "max relative error", numeric: true, value: (r) => metric(r, "max_rel_error") },
    { key: "tf", label: "TF error/limit", numeric: true, value: (r) => metric(r, "tf_max_error_in_limits"),
      title: "TensorFlow's own error against the float64 oracle, in units of its limit" },
    // The numerics of each case: which error model judged it, the low-precision RMS check, and the
    // accuracy relative to TensorFlow's (conformance/tolerance.py, conformance/accuracy.py).
    { key: "rms", label: "RMS/σ", numeric: true, value: (r) => metric(r, "rms_in_sigmas"),
      title: "float16/bfloat16 over a wider accumulator: root mean square error against the oracle in units of " +
        "each element's expected rounding error (limit 2)" },
    { key: "ratio", label: "× TF error", numeric: true, value: (r) => metric(r, "error_ratio_to_tensorflow"),
      title: "the backend's RMS error against the oracle divided by TensorFlow's (1: as accurate as TensorFlow)" },
    { key: "identical", label: "= TF", value: (r) => ((r.metrics || {}).identical_to_tensorflow ? "bitwise" : ""),
      title: "bitwise identical to TensorFlow's output" },
    { key: "model", label: "accumulator", value: (r) => (r.metrics || {}).accumulator || "",
      title: "the accumulator the error model assumed for this case (SUPPORTS accumulator; float32 by default " +
        "for float16/bfloat16)" },
    { key: "time", label: "time s", title: "seconds this result took", numeric: true, value: (r) => num(r.duration_s) },
  ];
  if (data.baseline) COLUMNS.push({ key: "change", label: "change", value: (r) => r.change || "" });
  COLUMNS.push({ key: "message", label: "message", value: (r) => r.message || "" });

  const state = { sort: null, descending: false, selected: null };
  const controls = {
    status: document.getElementById("filter-status"),
    backend: document.getElementById("filter-backend"),
    dtype: document.getElementById("filter-dtype"),
    change: document.getElementById("filter-change"),
    group: document.getElementById("filter-group"),
    text: document.getElementById("filter-text"),
  };

  function counted(values) {
    const counts = new Map();
    for (const v of values) counts.set(v, (counts.get(v) || 0) + 1);
    return counts;
  }
  function fillSelect(select, options) {
    if (!select) return;
    for (const [value, label] of options) select.appendChild(el("option", { value: value, text: label }));
  }
  const statusCounts = counted(rows.map((r) => r.status));
  const failingCount = rows.filter((r) => FAILING.has(r.status)).length;
  fillSelect(controls.status, [["", "all (" + rows.length + ")"], ["@failing", "failing (" + failingCount + ")"],
    ...data.statuses.filter((s) => statusCounts.has(s)).map((s) => [s, s + " (" + statusCounts.get(s) + ")"])]);
  const backendCounts = counted(rows.map((r) => r.backend));
  fillSelect(controls.backend, [["", "all"], ...[...backendCounts].map(([b, n]) => [b, b + " (" + n + ")"])]);
  const dtypeCounts = counted(rows.map((r) => params(r).dtype || ""));
  fillSelect(controls.dtype, [["", "all"], ...[...dtypeCounts].sort().map(([d, n]) => [d, d + " (" + n + ")"])]);
  const changeCounts = counted(rows.map((r) => r.change || "unchanged"));
  fillSelect(controls.change, [["", "all"], ...[...changeCounts].map(([c, n]) => [c, c + " (" + n + ")"])]);
  fillSelect(controls.group, [["", "all"], ...(data.groups || []).map((label, i) => [String(i + 1), "#" + (i + 1) + " " + label])]);

  function haystack(row) {
    const p = params(row);
    return [row.case, row.backend, row.status, row.message || "", p.description || "", (p.tags || []).join(" ")]
      .join("\n").toLowerCase();
  }
  const haystacks = rows.map(haystack);

  function visible() {
    const status = controls.status.value;
    const backend = controls.backend.value;
    const dtype = controls.dtype.value;
    const change = controls.change ? controls.change.value : "";
    const group = controls.group ? controls.group.value : "";
    const words = controls.text.value.toLowerCase().split(/\s+/).filter(Boolean);
    const shown = [];
    rows.forEach((row, index) => {
      if (status === "@failing" ? !FAILING.has(row.status) : status && row.status !== status) return;
      if (backend && row.backend !== backend) return;
      if (dtype && (params(row).dtype || "") !== dtype) return;
      if (change && (row.change || "unchanged") !== change) return;
      if (group && String(row.group || "") !== group) return;
      if (!words.every((w) => haystacks[index].includes(w))) return;
      shown.push(index);
    });
    if (state.sort !== null) {
      const column = COLUMNS[state.sort];
      const sign = state.descending ? -1 : 1;
      shown.sort((a, b) => {
        const x = column.value(rows[a]);
        const y = column.value(rows[b]);
        if (column.numeric) {  // missing values last, whatever the direction
          if (Number.isNaN(x) || Number.isNaN(y)) return Number.isNaN(x) - Number.isNaN(y) || a - b;
          return (x === y ? 0 : x < y ? -1 : 1) * sign || a - b;
        }
        return x.localeCompare(y, undefined, { numeric: true }) * sign || a - b;
      });
    }
    return shown;
  }

  // One line per row: the id, backend and message are clipped with an ellipsis, the whole text is in the
  // cell's title (hover) and in the detail (click); a case's description is in the id's title.
  function cell(column, row) {
    const td = el("td", { className: "col-" + column.key });
    if (column.key === "status") {
      td.classList.add("status-" + row.status);
      td.textContent = row.status;
    } else if (column.key === "case") {
      td.classList.add("mono");
      td.textContent = row.case;
      td.title = row.case + (params(row).description ? "\n" + params(row).description : "");
    } else if (column.numeric) {
      td.classList.add("num");
      const value = column.value(row);
      td.textContent = Number.isNaN(value) ? "" : column.key === "error" ? severityText(row) : fmt(value);  // "": absent
      if (column.key === "error" && column.value(row) > 1) td.classList.add("bad");
    } else if (column.key === "backend") {
      td.classList.add("mono");
      td.textContent = shortBackend(row.backend);
      td.title = row.backend;
    } else {
      td.textContent = column.value(row);
      if (column.key === "message") td.title = td.textContent;
    }
    return td;
  }

  const head = document.getElementById("results-head");
  const body = document.getElementById("results-body");
  COLUMNS.forEach((column, index) => {
    const th = el("th", { text: column.label, "data-column": column.key, title: column.title || "sort by " + column.label,
      className: "col-" + column.key });
    if (column.numeric) th.classList.add("num");
    th.addEventListener("click", () => {
      state.descending = state.sort === index ? !state.descending : column.numeric;  // numbers: largest first
      state.sort = index;
      render();
    });
    head.appendChild(th);
  });

  function render() {
    const shown = visible();
    const fragment = document.createDocumentFragment();
    for (const index of shown) {
      const row = rows[index];
      const tr = el("tr", { id: "row-" + index, "data-index": index, "data-status": row.status, "data-backend": row.backend,
        "data-dtype": params(row).dtype || "" });
      if (index === state.selected) tr.className = "selected";
      for (const column of COLUMNS) tr.appendChild(cell(column, row));
      fragment.appendChild(tr);
    }
    body.replaceChildren(fragment);
    head.querySelectorAll("th").forEach((th, index) => {
      th.classList.toggle("sorted-asc", index === state.sort && !state.descending);
      th.classList.toggle("sorted-desc", index === state.sort && state.descending);
    });
    document.getElementById("shown").textContent = shown.length + " of " + rows.length + " results";
  }

  body.addEventListener("click", (event) => {
    const tr = event.target.closest("tr[data-index]");
    if (tr) location.hash = "result-" + tr.dataset.index;
  });
  let typing = null;
  controls.text.addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(render, 150); });
  for (const name of ["status", "backend", "dtype", "change", "group"]) {
    if (controls[name]) controls[name].addEventListener("change", render);
  }
  document.querySelectorAll("tr[data-group]").forEach((tr) => tr.addEventListener("click", () => {
    controls.group.value = tr.dataset.group;  // a group's results, whatever the other filters said
    for (const name of ["status", "backend", "dtype", "change"]) if (controls[name]) controls[name].value = "";
    controls.text.value = "";
    render();
    document.getElementById("results").scrollIntoView();
  }));

  // --- the conformance matrix (several backends): cases x backends, grouped by failure group -------------
  function renderMatrix() {
    const matrix = data.matrix;
    const tbody = document.getElementById("matrix-body");
    if (!matrix || !tbody) return;
    const where = new Map(rows.map((row, index) => [row.case + "\n" + row.backend, index]));
    const show = document.getElementById("matrix-show").value;
    const words = document.getElementById("matrix-text").value.toLowerCase().split(/\s+/).filter(Boolean);
    const fragment = document.createDocumentFragment();
    let group = -1;
    let count = 0;
    for (const row of matrix.rows) {
      const cells = matrix.backends.map((b) => row.cells[b]);
      if (show === "failing" && !cells.some((c) => c && c.status !== "pass")) continue;
      if (show === "differs" && !row.differs) continue;
      if (!words.every((w) => row.case.toLowerCase().includes(w))) continue;
      if ((row.group || 0) !== group) {  // a header row per failure group (0: no failing cell)
        group = row.group || 0;
        const label = group ? "#" + group + " " + data.groups[group - 1] : "no failing cell";
        fragment.appendChild(el("tr", { className: "matrix-group" },
          [el("td", { colspan: String(matrix.backends.length + 1), text: label })]));
      }
      const tr = el("tr", {}, [el("td", { className: "mono", text: row.case, title: row.case })]);
      matrix.backends.forEach((backend, i) => {
        const c = cells[i];
        const td = el("td", { className: "num" });
        if (c) {
          td.classList.add("status-" + c.status);
          td.textContent = c.status + (c.error !== undefined && c.status !== "skip" ? " " + fmt(c.error) : "");
          td.title = backend + ": " + c.status + (c.error !== undefined ? ", worst error " + fmt(c.error) + " x its limit" : "") +
            (c.rejected_by ? ", rejected by the " + c.rejected_by : "");
          const index = where.get(row.case + "\n" + backend);
          if (index !== undefined) td.addEventListener("click", () => { location.hash = "result-" + index; });
        } else {
          td.textContent = "-";
        }
        tr.appendChild(td);
      });
      fragment.appendChild(tr);
      count += 1;
    }
    tbody.replaceChildren(fragment);
    document.getElementById("matrix-shown").textContent = count + " of " + matrix.rows.length + " cases";
  }
  if (data.matrix) {
    document.getElementById("matrix-show").addEventListener("change", renderMatrix);
    let matrixTyping = null;
    document.getElementById("matrix-text").addEventListener("input", () => {
      clearTimeout(matrixTyping);
      matrixTyping = setTimeout(renderMatrix, 150);
    });
    renderMatrix();
  }

  // --- charts ---------------------------------------------------------------------------------------
  function heatmap(map, shape) {
    const rowsN = map.rows, columnsN = map.columns;
    const size = Math.max(6, Math.min(18, Math.floor(360 / Math.max(rowsN, columnsN))));
    const left = 34, top = 16;
    const svg = svgEl("svg", { id: "heatmap", width: left + columnsN * size + 8, height: top + rowsN * size + 8,
      role: "img", "aria-label": "error heatmap, rows x columns" });
    svg.appendChild(svgText(left, 11, "column 0", "start"));
    svg.appendChild(svgText(left + columnsN * size, 11, String(shape[2] - 1), "end"));
    svg.appendChild(svgText(left - 4, top + 9, "row 0", "end"));
    svg.appendChild(svgText(left - 4, top + rowsN * size, String(shape[1] - 1), "end"));
    for (let i = 0; i < rowsN; i++) {
      for (let j = 0; j < columnsN; j++) {
        const v = map.values[i * columnsN + j];
        svg.appendChild(svgEl("rect", { x: left + j * size, y: top + i * size, width: size, height: size, fill: colour(v),
          "data-value": String(v) },
        "rows " + range(i * map.bin[0], map.bin[0], shape[1]) + ", columns " + range(j * map.bin[1], map.bin[1], shape[2]) +
          ": " + fmt(v) + "x " + scale.unit));
      }
    }
    return svg;
  }

  // Bars of log10(severity) per bin of an axis, on the scale's fixed log range, with the limit (1) dashed.
  function profile(axis, entry, length) {
    const values = entry.values;
    const barWidth = Math.max(3, Math.min(16, Math.floor(420 / values.length)));
    const left = 30, height = 90, top = 6;
    const low = scale.low, high = scale.high;
    const y = (v) => top + height * (1 - (Math.min(high, Math.max(low, v)) - low) / (high - low));
    const svg = svgEl("svg", { id: "profile-" + axis, width: left + values.length * barWidth + 6, height: top + height + 16,
      role: "img", "aria-label": "max error per " + AXIS_NAME[axis] });
    const mid = (low + high) / 2;
    for (const v of [high, mid, low]) svg.appendChild(svgText(left - 3, y(v) + 3, v === 0 ? "1" : "1e" + v, "end"));
    values.forEach((raw, i) => {
      const s = num(raw);
      const l = s === 0 || Number.isNaN(s) ? low : Number.isFinite(s) ? Math.log10(s) : high;
      svg.appendChild(svgEl("rect", { x: left + i * barWidth, y: y(l), width: Math.max(1, barWidth - 1),
        height: Math.max(0.5, y(low) - y(l)), fill: colour(raw), "data-value": String(raw) },
      AXIS_NAME[axis] + " " + range(i * entry.bin, entry.bin, length) + ": " + fmt(raw) + "x " + scale.unit));
    });
    if (!scale.exact) {
      svg.appendChild(svgEl("line", { x1: left, x2: left + values.length * barWidth, y1: y(0), y2: y(0), class: "limit-line" }));
    }
    svg.appendChild(svgText(left, top + height + 13, "0"));
    if (length > 1) svg.appendChild(svgText(left + values.length * barWidth, top + height + 13, String(length - 1), "end"));
    return svg;
  }

  // The H x W map over every channel, or (picked in its select) over one of the worst channels alone: a
  // bug in one channel paints the first solid; the channel's own map shows where in it the error is.
  function heatmaps(details, shape) {
    const channels = details.pattern ? details.pattern.C : null;
    const some = channels && channels.count > 0 && channels.count < channels.of ?
      " Over the limit in " + channels.count + " of " + channels.of + " channels only: pick one above." : "";
    const choices = [[details.heatmap, "every channel", "over " + shape[0] + " batch element(s) and " + shape[3] +
      " channels." + some]];
    (details.channel_heatmaps || []).forEach((map, i) => choices.push([map, "output channel " + map.channel +
      (i === 0 ? " (the worst)" : ""), "in output channel " + map.channel + " alone, over " + shape[0] + " batch element(s)."]));
    const picker = el("select", { id: "heatmap-channel", "aria-label": "heatmap of" });
    choices.forEach(([, label], i) => picker.appendChild(el("option", { value: String(i), text: label })));
    const holder = el("div");
    function draw() {
      const [map, , where] = choices[picker.selectedIndex];
      const pooled = map.bin[0] > 1 || map.bin[1] > 1 ? " Each cell is the max of " + map.bin[0] + "x" + map.bin[1] + " positions." : "";
      holder.replaceChildren(heatmap(map, shape), el("figcaption", { text: "Worst " + scale.label + " at each row x column, " +
        where + pooled }));
    }
    picker.addEventListener("change", draw);
    draw();
    return el("figure", {}, [choices.length > 1 ? el("label", { className: "picker" }, ["map of ", picker]) : "", holder]);
  }

  function histogram(h) {
    const bins = [["0", h.zero, 0], ["<1e" + h.low, h.below, 0]];
    h.counts.forEach((n, i) => {
      const low = h.low + i * h.step;
      bins.push(["1e" + low + "..1e" + (low + h.step), n, Math.pow(10, low + h.step / 2)]);
    });
    bins.push([">=1e" + (h.low + h.counts.length * h.step), h.above, 1e9], ["inf", h.infinite, Infinity]);
    const most = Math.max(1, ...bins.map((b) => b[1]));
    const barWidth = 16, left = 6, height = 90, top = 12;
    const svg = svgEl("svg", { id: "histogram", width: left + bins.length * barWidth + 6, height: top + height + 28,
      role: "img", "aria-label": "histogram of " + scale.label });
    bins.forEach(([label, n, centre], i) => {
      const barHeight = n ? Math.max(1.5, height * Math.sqrt(n / most)) : 0;
      svg.appendChild(svgEl("rect", { x: left + i * barWidth, y: top + height - barHeight, width: barWidth - 2, height: barHeight,
        fill: colour(centre === 0 ? 0 : over(centre) ? centre : 0.01) }, label + ": " + n + " elements"));
    });
    const limitX = left + (2 + (0 - h.low) / h.step) * barWidth - 1;  // between the bins below and above 1
    if (!scale.exact) {
      svg.appendChild(svgEl("line", { x1: limitX, x2: limitX, y1: top - 8, y2: top + height, class: "limit-line" }));
      svg.appendChild(svgText(limitX, top - 2, "limit", "middle"));
    }
    svg.appendChild(svgText(left, top + height + 12, "0"));
    if (!scale.exact) svg.appendChild(svgText(limitX, top + height + 12, "1", "middle"));
    svg.appendChild(svgText(left + bins.length * barWidth, top + height + 12, "inf", "end"));
    svg.appendChild(svgText(left, top + height + 25, scale.label + ", log scale; bar height ~ sqrt(count)"));
    return svg;
  }

  function figure(chart, caption) { return el("figure", {}, [chart, el("figcaption", { text: caption })]); }

  function legend() {
    const entries = scale.exact ?
      [[0, "no error"], [1e-6, "1e-6 B"], [1e-3, "1e-3 B"], [1, ">= B"], [Infinity, "NaN/Inf wrong"]] :
      [[0, "no error"], [1e-3, "within the limit"], [0.9, "near it"], [2, "over it"], [1e4, ">= 1e4x"],
        [Infinity, "NaN/Inf wrong"]];
    return el("div", { className: "legend" },
      entries.map(([v, text]) => el("span", {}, [el("i", { style: "background:" + colour(v) }), text])));
  }

  function patternList(pattern, border) {
    const list = el("ul", { id: "pattern", className: "pattern-list" });
    if (border) {
      list.appendChild(el("li", { className: "partial", text: "rows x columns: only a border " + border + " wide along the edges " +
        "(the interior is right): padding or boundary handling" }));
    }
    for (const axis of ["N", "H", "W", "C"]) {
      const p = pattern[axis];
      let text;
      if (p.count === 0) text = "none over the limit";
      else if (p.count === p.of) text = "all " + p.of;
      else {
        text = p.count + " of " + p.of + ": " + p.ranges.map((r) => (r[0] === r[1] ? String(r[0]) : r[0] + ".." + r[1])).join(", ") +
          (p.more_ranges ? " and " + p.more_ranges + " more ranges" : "");
        if (p.ranges.length === 1 && p.ranges[0][0] === p.of - 1 && p.ranges[0][1] === p.of - 1) text += " (the last only)";
        else if (p.ranges.length === 1 && p.ranges[0][0] === 0 && p.ranges[0][1] === 0) text += " (the first only)";
        else if (p.count === 2 && p.ranges.length === 2 && p.ranges[0][0] === 0 && p.ranges[1][0] === p.of - 1) {
          text += " (the first and last only)";
        }
      }
      list.appendChild(el("li", { className: p.count && p.count < p.of ? "partial" : "", text: AXIS_NAMES[axis] + ": " + text }));
    }
    return list;
  }

  function worstTable(worst, layout) {
    const table = el("table", { id: "worst", className: "worst" });
    table.appendChild(el("thead", {}, [el("tr", {}, ["index [" + layout.split("").join(", ") + "]", "expected", "got", "error",
      "limit", "error / limit"].map((t) => el("th", { text: t })))]));
    const tbody = el("tbody");
    for (const w of worst) {
      tbody.appendChild(el("tr", {}, [el("td", { className: "mono", text: "[" + w.index.join(", ") + "]" }),
        el("td", { className: "num", text: exact(w.expected) }), el("td", { className: "num", text: exact(w.got) }),
        el("td", { className: "num", text: fmt(w.error) }), el("td", { className: "num", text: fmt(w.limit) }),
        el("td", { className: "num bad", text: fmt(w.error_in_limits) })]));
    }
    table.appendChild(tbody);
    return table;
  }

  function keyValues(id, className, entries) {
    const tbody = el("tbody");
    for (const [key, value] of entries) tbody.appendChild(el("tr", {}, [el("td", { text: key }), el("td", { className: "mono", text: value })]));
    return el("table", { id: id, className: className }, [tbody]);
  }
  function show(value) {
    if (value === null || value === undefined) return "";
    if (typeof value === "number" || typeof value === "string" && /^-?(inf|nan)$/.test(value)) return fmt(value);
    return typeof value === "object" ? JSON.stringify(value) : String(value);
  }

  function failureMaps(details, body, row) {
    const shape = details.shape;
    scale = SCALES[details.scale] || SCALES.limit;
    if (scale.exact) {
      body.appendChild(el("p", { className: "hint", text: "Exact case (integer data): any error fails. To show how much, " +
        "not only where, the maps show the error relative to B, the sum of the magnitudes of the element's terms " +
        "(a value read from the wrong place is typically 0.1 B to B)." }));
    }
    if (details.kind === "statistics") {
      body.appendChild(el("p", { text: "Every element is within its limit: the tensor-level check failed (the errors lean one way, " +
        "or there are too many of them). The signs of the errors and the histogram show how." }));
    }
    if (details.gradient) {  // a backward case: the maps are of the worst failing gradient
      const failing = ((row.metrics || {}).failing_gradients || [details.gradient]).join(", ");
      body.appendChild(el("p", { id: "gradient", className: "relation", text: "Gradients off: " + failing +
        "; the maps below are of " + details.gradient + (details.layout && details.layout.length === 4 &&
        !["NHWC", "NCHW"].includes(details.layout) ? " (a filter: indices [" + details.layout.split("").join(", ") +
        "], no spatial maps)" : "") + "." }));
    }
    if (details.relation) {  // conformance/judging/detectors.py: the bug in one sentence, where one fits
      body.appendChild(el("p", { id: "relation", className: "relation", text: "Recognized: " + details.relation.sentence }));
    }
    if (details.pattern) {
      body.appendChild(el("h3", { text: "Where the over-limit elements are (exact indices, logical axes)" }));
      body.appendChild(patternList(details.pattern, details.border));
    }
    const s = details.signs;
    if (s) {
      const mean = s.mean_signed === undefined ? "" : "; mean signed error " + fmt(s.mean_signed) + "x " + scale.unit;
      body.appendChild(el("p", { id: "signs", text: "Signs of the errors: " + s.above + " above the reference, " + s.below +
        " below, " + s.equal + " equal" + mean + "." }));
    }
    const charts = el("div", { className: "charts" });
    if (details.heatmap) charts.appendChild(heatmaps(details, shape));
    if (details.histogram) charts.appendChild(figure(histogram(details.histogram), "How many elements at each " + scale.label + "."));
    body.appendChild(charts);
    if (details.heatmap) body.appendChild(legend());
    if (details.profiles) {
      const profiles = el("div", { className: "charts" });
      const lengths = { N: shape[0], H: shape[1], W: shape[2], C: shape[3] };
      for (const axis of ["C", "H", "W", "N"]) {
        const entry = details.profiles[axis];
        profiles.appendChild(figure(profile(axis, entry, lengths[axis]), "Worst " + scale.label + " per " + AXIS_NAME[axis] +
          (entry.bin > 1 ? " (bins of " + entry.bin + ")" : "") + (scale.exact ? "." : "; dashed: the limit.")));
      }
      body.appendChild(el("h3", { text: "Per channel, row, column and batch element" }));
      body.appendChild(profiles);
    }
    if (details.worst && details.worst.length) {
      body.appendChild(el("h3", { text: "Worst elements" }));
      body.appendChild(worstTable(details.worst, details.layout || "NHWC"));
    }
  }

  function openDetail(index) {
    const row = rows[index];
    const panel = document.getElementById("detail");
    if (!row) { panel.hidden = true; return; }
    if (state.selected !== null) {
      const previous = document.getElementById("row-" + state.selected);
      if (previous) previous.classList.remove("selected");
    }
    state.selected = index;
    const tr = document.getElementById("row-" + index);
    if (tr) tr.classList.add("selected");
    document.getElementById("detail-title").textContent = row.status.toUpperCase() + " " + row.case + " [" + row.backend + "]";
    const body = el("div", { id: "detail-body" });
    const failing = FAILING.has(row.status);
    if (row.message) body.appendChild(el("p", { id: "detail-message", className: "message" + (failing ? "" : " ok"), text: row.message }));
    if (row.reproducer) {
      const pre = el("pre", { id: "reproducer", text: row.reproducer });
      const copy = el("button", { type: "button", text: "copy" });
      copy.addEventListener("click", () => {
        const range = document.createRange();
        range.selectNodeContents(pre);
        getSelection().removeAllRanges();
        getSelection().addRange(range);
        if (navigator.clipboard) navigator.clipboard.writeText(row.reproducer).catch(() => {});
      });
      body.appendChild(el("h3", { text: "Reproduce this case alone" }));
      body.appendChild(el("div", { className: "reproducer" }, [pre, copy]));
    }
    if (row.details) failureMaps(row.details, body, row);
    else if (row.details_omitted) {
      body.appendChild(el("p", { className: "hint", text: "Error maps left out to keep the page small (it embeds them for " +
        "each backend's most severe failures first, within a size budget); the worst elements are below, " +
        "the maps are in results.json (details)." }));
    }
    if (!row.details && row.metrics && row.metrics.worst && row.metrics.worst.length) {
      body.appendChild(el("h3", { text: "Worst elements" }));
      body.appendChild(worstTable(row.metrics.worst, params(row).data_format || "NHWC"));
    }
    body.appendChild(el("h3", { text: "Parameters" }));
    body.appendChild(keyValues("params", "params", Object.entries(params(row)).map(([k, v]) => [k, show(v)])));
    body.appendChild(el("h3", { text: "Reference" }));
    body.appendChild(keyValues("reference", "params", [["compared with", row.reference || ""],
      ["TensorFlow's status", row.reference_status || ""], ["detail", row.reference_detail || (row.reference_status === "not_run" ?
        "TensorFlow not used" : "")], ["expect", row.expect || ""]]));
    const metrics = Object.entries(row.metrics || {}).filter(([k]) => k !== "worst");
    if (metrics.length) {
      body.appendChild(el("h3", { text: "Metrics (tf_*: TensorFlow against the oracle)" }));
      body.appendChild(keyValues("metrics", "metrics", metrics.map(([k, v]) => [k, show(v)])));
    }
    document.getElementById("detail-body").replaceWith(body);
    panel.hidden = false;
    panel.scrollTop = 0;
  }

  function fromHash() {
    const match = /^#result-(\d+)$/.exec(location.hash);
    if (match) openDetail(Number(match[1]));
    else document.getElementById("detail").hidden = true;
  }
  window.addEventListener("hashchange", fromHash);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !document.getElementById("detail").hidden) location.hash = "results";
  });

  render();
  fromHash();
  document.body.dataset.ready = "1";
})();
