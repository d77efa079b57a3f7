// A time-series chart on uPlot, with the same figures as an accessible table beside it.
//
// `series` is a list of {label, points: [[unixSeconds, value|null], ...], dash?}. The x values of
// all series are merged; a series without a value at some x gets a gap there.

import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import { formatNumber, html } from "./ui.js";

const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563"];

export function colorFor(index) {
  return PALETTE[index % PALETTE.length];
}

export function alignSeries(series) {
  const xs = [...new Set(series.flatMap((one) => one.points.map(([x]) => x)))].sort((a, b) => a - b);
  const columns = series.map((one) => {
    const byX = new Map(one.points);
    return xs.map((x) => (byX.has(x) ? byX.get(x) : null));
  });
  return [xs, ...columns];
}

export function Chart({ id, title, unit, series, height = 220 }) {
  const holder = useRef(null);
  const plot = useRef(null);
  const data = alignSeries(series);
  const shape = series.map((one) => `${one.label}|${one.color}|${one.dash ? 1 : 0}`).join(";");

  useEffect(() => {
    if (!holder.current) return undefined;
    const options = {
      width: Math.max(320, holder.current.clientWidth || 600),
      height,
      scales: { x: { time: true } },
      axes: [{}, { label: unit, size: 60 }],
      series: [
        { label: "time" },
        ...series.map((one) => ({
          label: one.label,
          stroke: one.color,
          width: 2,
          dash: one.dash ? [6, 4] : undefined,
          points: { show: true, size: 5 },
          spanGaps: false,
          value: (_, value) => (value === null ? "—" : formatNumber(value, 3)),
        })),
      ],
    };
    plot.current = new uPlot(options, data, holder.current);
    const resize = new ResizeObserver(() => {
      if (holder.current && plot.current) {
        plot.current.setSize({ width: Math.max(320, holder.current.clientWidth), height });
      }
    });
    resize.observe(holder.current);
    return () => {
      resize.disconnect();
      plot.current.destroy();
      plot.current = null;
    };
    // Re-create the chart only when the set of series changes; new points go through setData.
  }, [shape, unit, height]);

  useEffect(() => {
    if (plot.current) plot.current.setData(data);
  });

  const counts = series.map((one) => ({
    label: one.label,
    points: one.points.filter(([, value]) => value !== null).length,
  }));
  const description = counts.map((one) => `${one.label}: ${one.points} points`).join("; ");
  return html`
    <figure class="chart" aria-labelledby=${`${id}-title`} data-chart=${id}>
      <figcaption id=${`${id}-title`}>${title}</figcaption>
      <div
        class="chart-canvas"
        ref=${holder}
        role="img"
        aria-label=${`${title}. ${description || "no data"}`}
        data-points=${JSON.stringify(Object.fromEntries(counts.map((one) => [one.label, one.points])))}
      ></div>
      <details>
        <summary>Data table: ${title}</summary>
        <table aria-label=${`${title} data`}>
          <thead>
            <tr>
              <th scope="col">Time (UTC)</th>
              ${series.map((one) => html`<th scope="col">${one.label}</th>`)}
            </tr>
          </thead>
          <tbody>
            ${data[0].map(
              (x, row) => html`<tr>
                <td>${new Date(x * 1000).toISOString().replace("T", " ").slice(0, 19)}</td>
                ${series.map((_, column) => html`<td>${formatNumber(data[column + 1][row], 3)}</td>`)}
              </tr>`,
            )}
          </tbody>
        </table>
      </details>
    </figure>
  `;
}
