// Per-release telemetry: latency p50/p95, mean confidence and anomaly rate per model version.
//
// `/telemetry/summary` returns one row per (bucket, release, model, version, core). The charts
// draw one line per model version, so rows of the same bucket and version (several cores or
// releases) are merged, weighted by their inference counts; for the latency percentiles that
// weighted mean is an approximation, which the page says.

import { useState } from "preact/hooks";
import { get, getAll } from "./api.js";
import { Chart, colorFor } from "./chart.js";
import { ErrorBox, Loading, Table, formatNumber, html, usePoll } from "./ui.js";

const WINDOWS = [
  { value: "3600", label: "last hour" },
  { value: "21600", label: "last 6 hours" },
  { value: "86400", label: "last 24 hours" },
  { value: "604800", label: "last 7 days" },
  { value: "", label: "all time" },
];

const METRICS = ["latency_p50_us", "latency_p95_us", "score_mean", "anomaly_rate"];

export function versionLabel(row) {
  return `${row.model_id} v${row.model_version}`;
}

// {label -> {bucketSeconds -> {count, latency_p50_us, ...}}}, count-weighted means per bucket.
export function mergeByVersion(items) {
  const series = new Map();
  for (const row of items) {
    const label = versionLabel(row);
    const x = Math.floor(new Date(row.bucket_start).getTime() / 1000);
    const buckets = series.get(label) || new Map();
    const cell = buckets.get(x) || { count: 0, sums: {}, weights: {} };
    const weight = row.count || 0;
    cell.count += weight;
    for (const metric of METRICS) {
      if (row[metric] === null || row[metric] === undefined) continue;
      cell.sums[metric] = (cell.sums[metric] || 0) + row[metric] * weight;
      cell.weights[metric] = (cell.weights[metric] || 0) + weight;
    }
    buckets.set(x, cell);
    series.set(label, buckets);
  }
  const result = new Map();
  for (const label of [...series.keys()].sort()) {
    const points = [...series.get(label).entries()].sort((a, b) => a[0] - b[0]);
    result.set(
      label,
      points.map(([x, cell]) => {
        const values = { x, count: cell.count };
        for (const metric of METRICS) {
          values[metric] = cell.weights[metric] ? cell.sums[metric] / cell.weights[metric] : null;
        }
        return values;
      }),
    );
  }
  return result;
}

function chartSeries(merged, metric, scale = 1, suffix = "", dash = false, offset = 0) {
  return [...merged.entries()].map(([label, points], index) => ({
    label: `${label}${suffix}`,
    color: colorFor(index + offset),
    dash,
    points: points.map((point) => [point.x, point[metric] === null ? null : point[metric] * scale]),
  }));
}

async function loadTelemetry(releaseId, bucket, windowSeconds) {
  const since = windowSeconds
    ? new Date(Date.now() - Number(windowSeconds) * 1000).toISOString()
    : undefined;
  const [releases, summary] = await Promise.all([
    getAll("/releases"),
    get("/telemetry/summary", { release_id: releaseId, bucket, since }),
  ]);
  return { releases: releases.items, items: summary.items };
}

export function Telemetry({ release }) {
  const [bucket, setBucket] = useState("minute");
  const [windowSeconds, setWindowSeconds] = useState("86400");
  const releaseId = release || "";
  const { data, error } = usePoll(
    () => loadTelemetry(releaseId, bucket, windowSeconds),
    [releaseId, bucket, windowSeconds],
  );
  const choose = (event) => {
    const value = event.target.value;
    window.location.hash = value ? `#/telemetry/${encodeURIComponent(value)}` : "#/telemetry";
  };
  const merged = data ? mergeByVersion(data.items) : new Map();
  const versions = [...merged.entries()];
  return html`
    <section aria-labelledby="telemetry-heading">
      <h1 id="telemetry-heading">Telemetry${releaseId ? ` for release ${releaseId}` : ""}</h1>
      <form class="filters" onSubmit=${(event) => event.preventDefault()}>
        <label class="inline">
          Release
          <select value=${releaseId} onChange=${choose}>
            <option value="">all releases</option>
            ${(data?.releases || []).map(
              (item) => html`<option value=${item.id}>${item.id}</option>`,
            )}
          </select>
        </label>
        <label class="inline">
          Bucket
          <select value=${bucket} onChange=${(event) => setBucket(event.target.value)}>
            <option value="minute">minute</option>
            <option value="hour">hour</option>
          </select>
        </label>
        <label class="inline">
          Window
          <select value=${windowSeconds} onChange=${(event) => setWindowSeconds(event.target.value)}>
            ${WINDOWS.map((item) => html`<option value=${item.value}>${item.label}</option>`)}
          </select>
        </label>
      </form>
      <${ErrorBox} error=${error} />
      ${!data
        ? !error && html`<${Loading} what="telemetry" />`
        : versions.length === 0
          ? html`<p class="muted">No telemetry in this window.</p>`
          : html`
              <${Table}
                caption="Model versions"
                headers=${["Model version", "Buckets", "Inferences", "Mean confidence", "Anomaly rate"]}
                rows=${versions.map(([label, points]) => {
                  const total = points.reduce((sum, point) => sum + point.count, 0);
                  const weighted = (metric) => {
                    const known = points.filter((point) => point[metric] !== null);
                    const weight = known.reduce((sum, point) => sum + point.count, 0);
                    return weight
                      ? known.reduce((sum, point) => sum + point[metric] * point.count, 0) / weight
                      : null;
                  };
                  return [
                    label,
                    points.length,
                    total,
                    formatNumber(weighted("score_mean"), 3),
                    formatNumber(weighted("anomaly_rate"), 3),
                  ];
                })}
              />
              <div class="charts">
                <${Chart}
                  id="latency"
                  title="Latency p50 / p95 (ms)"
                  unit="ms"
                  series=${[
                    ...chartSeries(merged, "latency_p50_us", 1 / 1000, " p50"),
                    ...chartSeries(merged, "latency_p95_us", 1 / 1000, " p95", true),
                  ]}
                />
                <${Chart}
                  id="confidence"
                  title="Mean confidence"
                  unit="score"
                  series=${chartSeries(merged, "score_mean")}
                />
                <${Chart}
                  id="anomaly"
                  title="Anomaly rate"
                  unit="rate"
                  series=${chartSeries(merged, "anomaly_rate")}
                />
              </div>
              <p class="muted">
                Lines merge cores and releases of one model version per bucket, weighted by
                inference count (latency percentiles so merged are approximate).
              </p>
            `}
    </section>
  `;
}
