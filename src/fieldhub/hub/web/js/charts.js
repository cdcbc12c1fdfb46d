// Telemetry charts of one device: history from the API, downsampled to a few hundred points
// per range, and live points appended as they arrive. uPlot draws (vendor/uplot, MIT).

import uPlot from "../vendor/uplot/uPlot.esm.js";
import { api } from "./api.js";
import { valueAxisSize, valueLabels, valueSplits } from "./axis.js";
import { h, replace } from "./dom.js";
import { value } from "./format.js";

const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;
const HEIGHT = 170;

/** The ranges on offer; each bucket gives about 300 points (the API averages in buckets). */
export const RANGES = [
  { label: "1h", ms: HOUR, bucket: 10_000, per: "10 s" },
  { label: "24h", ms: DAY, bucket: 5 * MIN, per: "5 min" },
  { label: "7d", ms: 7 * DAY, bucket: 30 * MIN, per: "30 min" },
  { label: "30d", ms: 30 * DAY, bucket: 2 * HOUR, per: "2 h" },
  { label: "90d", ms: 90 * DAY, bucket: 6 * HOUR, per: "6 h" },
];

/**
 * A y range around the data with some room, also for a single value (uPlot's own from 0). A
 * spread of float noise (averages of one value: 32.0625, 32.062500000000004) counts as one value.
 */
function padded(min, max) {
  if (min === null || max === null) return [0, 1];
  const span = max - min;
  const flat = span <= Math.max(Math.abs(min), Math.abs(max)) * 1e-9;
  const room = flat ? Math.max(Math.abs(max) * 0.02, 0.1) : span * 0.1;
  return [min - room, max + room];
}

function cssVar(name, fallback) {
  const found = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return found || fallback;
}

/** One small chart per numeric telemetry key, over the chosen range. */
export class TelemetryCharts {
  /**
   * @param {HTMLElement} root where the charts go
   * @param {string} deviceId
   */
  constructor(root, deviceId) {
    this.root = root;
    this.deviceId = deviceId;
    this.range = RANGES[0];
    this.keys = [];
    this.charts = new Map(); // key → {plot, xs, ys, counts, title, zoomed}
    this.end = Date.now();
    this.loading = null;
    this.resizer = new ResizeObserver(() => this.resize());
    this.resizer.observe(root);
  }

  /** Show `keys` (numeric telemetry) over `range`, the user's choice: zooms end. */
  show(keys, range = this.range) {
    return this.load(keys, range, false);
  }

  /** Fetch and draw again, not asked for by the user (a resync, a new key): zooms stay. */
  refresh(keys) {
    return this.load(keys, this.range, true);
  }

  async load(keys, range, keepZoom) {
    this.keys = [...keys].sort();
    this.range = range;
    const token = {};
    this.loading = token;
    this.end = Date.now();
    const start = this.end - range.ms;
    let history = { series: {} };
    if (this.keys.length) {
      history = await api(`/api/devices/${encodeURIComponent(this.deviceId)}/telemetry`, {
        query: {
          keys: this.keys.join(","),
          start,
          end: this.end + 1,
          bucket: range.bucket,
          agg: "avg",
        },
      });
    }
    if (this.loading !== token) return; // a newer request won
    this.draw(history.series ?? {}, keepZoom);
  }

  draw(series, keepZoom = false) {
    const zooms = new Map(); // key → the x range the user zoomed into
    for (const [key, chart] of this.charts) {
      if (keepZoom && chart.zoomed) zooms.set(key, { min: chart.plot.scales.x.min, max: chart.plot.scales.x.max });
      chart.plot.destroy();
    }
    this.charts.clear();
    if (!this.keys.length) {
      replace(this.root, h("p", { class: "muted", text: "No numeric telemetry yet." }));
      return;
    }
    const boxes = [];
    for (const key of this.keys) {
      const points = (series[key] ?? []).filter(([, v]) => typeof v === "number");
      const title = h("span", { class: "chart-value" });
      const holder = h("div", { class: "chart-plot" });
      const box = h(
        "figure",
        { class: "chart", dataset: { key } },
        h("figcaption", {}, h("span", { class: "chart-key", text: key }), title),
        holder,
      );
      boxes.push(box);
      const chart = {
        xs: points.map(([ts]) => ts),
        ys: points.map(([, v]) => v),
        counts: points.map(() => 1),
        title,
        holder,
        zoomed: false,
        plot: null,
      };
      this.charts.set(key, chart);
    }
    replace(this.root, boxes);
    for (const [key, chart] of this.charts) {
      chart.plot = this.makePlot(key, chart);
      const zoom = zooms.get(key);
      if (zoom) {
        chart.zoomed = true;
        chart.plot.setScale("x", zoom);
      }
      this.caption(chart);
    }
  }

  makePlot(key, chart) {
    const line = cssVar("--chart-line", "#2563eb");
    const axis = cssVar("--muted", "#667");
    const grid = cssVar("--grid", "#e5e7eb");
    const windowOf = () => [this.end - this.range.ms, this.end];
    const plot = new uPlot(
      {
        width: Math.max(chart.holder.clientWidth, 200),
        height: HEIGHT,
        ms: 1,
        legend: { show: false },
        cursor: {
          drag: { x: true, y: false },
          // A double-click shows the whole range again: the zoom ends before uPlot rescales.
          bind: {
            dblclick: (_u, target, handler) => (event) => {
              if (event.button !== 0 || event.target !== target) return;
              chart.zoomed = false;
              handler(event);
            },
          },
        },
        scales: {
          // The chosen range, ending now, unless the user dragged across a stretch of it.
          x: { time: true, range: (_u, min, max) => (chart.zoomed ? [min, max] : windowOf()) },
          y: { range: (_u, min, max) => padded(min, max) },
        },
        series: [
          {},
          {
            label: key,
            stroke: line,
            width: 1.5,
            points: { show: (u) => u.data[0].length < 60 },
            value: (_u, v) => (v === null ? "—" : value(v)),
          },
        ],
        axes: [
          { stroke: axis, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid } },
          {
            stroke: axis,
            grid: { stroke: grid, width: 1 },
            ticks: { stroke: grid },
            splits: valueSplits,
            values: valueLabels,
            size: valueAxisSize,
          },
        ],
        hooks: {
          // A drag ends in a selection, then uPlot sets the x scale to it: zoomed from here.
          setSelect: [
            (u) => {
              if (u.select.width > 0) chart.zoomed = true;
            },
          ],
        },
      },
      [chart.xs, chart.ys],
      chart.holder,
    );
    return plot;
  }

  /** A live telemetry message: add its numeric values to the current bucket of each chart. */
  add(ts, values) {
    this.end = Math.max(this.end, Date.now(), ts);
    const bucket = this.range.bucket;
    const since = this.end - this.range.ms;
    let fresh = false;
    for (const [key, v] of Object.entries(values)) {
      if (typeof v !== "number") continue;
      const chart = this.charts.get(key);
      if (!chart) {
        if (!this.keys.includes(key)) fresh = true; // a new key: draw again with it
        continue;
      }
      const start = Math.floor(ts / bucket) * bucket;
      const i = chart.xs.length - 1;
      if (i >= 0 && chart.xs[i] === start) {
        chart.counts[i] += 1;
        chart.ys[i] += (v - chart.ys[i]) / chart.counts[i]; // running average, as agg=avg
      } else if (i < 0 || chart.xs[i] < start) {
        chart.xs.push(start);
        chart.ys.push(v);
        chart.counts.push(1);
      } else {
        continue; // older than what is shown: the next load has it
      }
      while (chart.xs.length && chart.xs[0] < since - bucket) {
        chart.xs.shift();
        chart.ys.shift();
        chart.counts.shift();
      }
      this.caption(chart);
      chart.plot.setData([chart.xs, chart.ys], !chart.zoomed);
    }
    if (fresh) {
      const keys = [...new Set([...this.keys, ...Object.keys(values).filter((k) => typeof values[k] === "number")])];
      this.refresh(keys).catch(() => {});
    }
  }

  /** The newest point of a chart, said for what it is: an average over its bucket. */
  caption(chart) {
    const last = chart.ys.at(-1);
    chart.title.textContent = last === undefined ? "no data in range" : `${value(last)} (${this.range.per} avg)`;
  }

  resize() {
    for (const chart of this.charts.values()) {
      const width = Math.max(chart.holder.clientWidth, 200);
      if (chart.plot && chart.plot.width !== width) chart.plot.setSize({ width, height: HEIGHT });
    }
  }
}
