// How a chart's value axis reads: ticks that say different things, and room for all of them.
//
// uPlot's defaults print at most three decimals into a fixed gutter. A supply or temperature
// that hardly moves (32.0621 to 32.0629) then gets one tick, or several that all read
// "32.063", and a label wider than the gutter is cut at the chart's edge ("2.063"). Here the
// ticks are at least two, each label has as many decimals as the step between ticks needs, and
// the axis is as wide as its widest label.

const MIN_TICKS = 2;
const MAX_DECIMALS = 12;
const EMPTY_SIZE = 48; // before uPlot knows the labels (its first layout pass)

/** The decimals `v` needs to be written exactly (up to MAX_DECIMALS). */
function decimalsOf(v) {
  for (let d = 0; d < MAX_DECIMALS; d++) {
    const scaled = Math.abs(v) * 10 ** d;
    if (Math.abs(scaled - Math.round(scaled)) < 1e-6 * Math.max(1, scaled)) return d;
  }
  return MAX_DECIMALS;
}

/** The next step below `step` in the 1-2-5 sequence (0.0005 → 0.0002 → 0.0001 → 0.00005). */
function smaller(step) {
  const mag = 10 ** Math.floor(Math.log10(step));
  for (const candidate of [5 * mag, 2 * mag, mag, mag / 2]) {
    if (candidate < step * (1 - 1e-9)) return candidate;
  }
  return step / 2;
}

/** The multiples of `step` from `min` to `max`, written exactly to the step's decimals. */
function multiples(min, max, step) {
  const decimals = decimalsOf(step);
  const first = Math.ceil(min / step - 1e-9);
  const last = Math.floor(max / step + 1e-9);
  const found = [];
  for (let k = first; k <= last; k++) found.push(Number((k * step).toFixed(decimals)));
  return found;
}

/**
 * uPlot `axes[].splits`: where the ticks go. uPlot's own step keeps ticks 30 px apart, which on
 * a narrow range can leave a single tick; then a smaller step of the same sequence is taken.
 */
export function valueSplits(_u, _axisIdx, min, max, incr) {
  if (!(incr > 0) || !(max > min)) return [min];
  let step = incr;
  let found = multiples(min, max, step);
  const finest = Math.max(Math.abs(min), Math.abs(max)) * 1e-12; // below: float noise
  while (found.length < MIN_TICKS && step > finest) {
    step = smaller(step);
    found = multiples(min, max, step);
  }
  return found;
}

/**
 * uPlot `axes[].values`: the tick labels, all with the decimals the finest of them needs, so
 * that ticks one step apart never read the same (32.0622, 32.0624; 32.0, 32.5).
 */
export function valueLabels(_u, splits) {
  const decimals = Math.max(0, ...splits.map(decimalsOf));
  return splits.map((v) => (v === null || v === undefined ? "" : v.toFixed(decimals)));
}

/**
 * uPlot `axes[].size`: as wide as the widest label in the axis' own font, plus its tick and
 * gap, in CSS pixels. Labels depend on the chart's height only, so the layout settles at once.
 */
export function valueAxisSize(u, values, axisIdx) {
  if (!values?.length) return EMPTY_SIZE;
  const axis = u.axes[axisIdx];
  const before = u.ctx.font;
  u.ctx.font = axis.font[0]; // already scaled to the device's pixels
  const widest = Math.max(...values.map((text) => u.ctx.measureText(text).width));
  u.ctx.font = before;
  return Math.ceil(widest / devicePixelRatio + (axis.ticks.show ? axis.ticks.size : 0) + axis.gap + 1);
}
