// Shared pieces: the htm binding, the polling hook, formatting and small presentational components.

import { h } from "preact";
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import htm from "htm";

export const html = htm.bind(h);

const refreshParam = Number(new URLSearchParams(window.location.search).get("refresh"));
// Seconds between automatic refreshes; `?refresh=N` overrides it (N >= 1).
export const REFRESH_SECONDS = refreshParam >= 1 ? refreshParam : 3;

// Load data now and every REFRESH_SECONDS while the view is shown; `deps` restart it.
// A 401 is announced to the app (which asks for a token again) instead of shown in the view.
export function usePoll(loader, deps) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const generation = useRef(0);
  const load = useCallback(async () => {
    const mine = generation.current;
    try {
      const data = await loader();
      if (mine === generation.current) setState({ data, error: null, loading: false });
    } catch (error) {
      if (error.status === 401) window.dispatchEvent(new CustomEvent("tinyfleet:unauthorized"));
      if (mine === generation.current) setState((old) => ({ ...old, error, loading: false }));
    }
  }, deps);
  useEffect(() => {
    generation.current += 1;
    setState({ data: null, error: null, loading: true });
    load();
    const timer = window.setInterval(load, REFRESH_SECONDS * 1000);
    return () => {
      generation.current += 1;
      window.clearInterval(timer);
    };
  }, [load]);
  return { ...state, reload: load };
}

export function formatTime(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return date.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

export function formatNumber(value, digits = 2) {
  if (value === null || value === undefined) return "—";
  if (typeof value !== "number") return String(value);
  return Number.isInteger(value) ? String(value) : value.toFixed(digits);
}

// Stages are 0-based in the API and numbered from 1 on the page.
export function stageText(rollout) {
  const stages = rollout.stages || [];
  const stage = stages.find((candidate) => candidate.index === rollout.stage);
  const name = stage ? ` (${stage.name})` : "";
  return `stage ${rollout.stage + 1} of ${stages.length || "?"}${name}`;
}

export function stageNumber(index) {
  return typeof index === "number" ? index + 1 : (index ?? "—");
}

export function link(path) {
  return `#${path}`;
}

export function Loading({ what }) {
  return html`<p class="muted" role="status">Loading ${what}…</p>`;
}

export function ErrorBox({ error }) {
  if (!error) return null;
  const code = error.code ? ` (${error.code})` : "";
  return html`<p class="error" role="alert">${error.message}${code}</p>`;
}

export function Badge({ value }) {
  return html`<span class=${`badge badge-${String(value).replace(/[^a-z_-]/gi, "")}`}>${value}</span>`;
}

// A table with a caption; `rows` are arrays of cells, `empty` is shown when there are none.
export function Table({ caption, headers, rows, empty = "None.", label }) {
  return html`
    <table aria-label=${label || caption}>
      ${caption && html`<caption>${caption}</caption>`}
      <thead>
        <tr>${headers.map((header) => html`<th scope="col">${header}</th>`)}</tr>
      </thead>
      <tbody>
        ${rows.length === 0
          ? html`<tr><td colspan=${headers.length} class="muted">${empty}</td></tr>`
          : rows.map((cells) => html`<tr>${cells.map((cell) => html`<td>${cell}</td>`)}</tr>`)}
      </tbody>
    </table>
  `;
}

// Job states grouped the way an operator reads progress.
export const PROGRESS_BUCKETS = [
  { key: "confirmed", label: "confirmed", states: ["confirmed"] },
  {
    key: "in_progress",
    label: "in progress",
    states: ["offered", "downloading", "verifying", "transferring", "staged", "activating", "soaking", "cancelling"],
  },
  { key: "failed", label: "failed", states: ["failed", "rejected", "reverted", "timed_out"] },
  { key: "pending", label: "pending", states: ["pending"] },
  { key: "cancelled", label: "cancelled", states: ["cancelled"] },
];

export function bucketCounts(counts, planned) {
  const result = Object.fromEntries(PROGRESS_BUCKETS.map((bucket) => [bucket.key, 0]));
  let total = 0;
  for (const [state, n] of Object.entries(counts || {})) {
    const bucket = PROGRESS_BUCKETS.find((candidate) => candidate.states.includes(state));
    result[bucket ? bucket.key : "in_progress"] += n;
    total += n;
  }
  // Devices planned for the stage whose jobs are not created yet are pending too.
  if (planned && planned > total) {
    result.pending += planned - total;
    total = planned;
  }
  result.total = total;
  return result;
}

// A stacked bar of confirmed / in progress / failed / pending (and cancelled when there are any).
export function ProgressBar({ counts, planned, label }) {
  const buckets = bucketCounts(counts, planned);
  const shown = PROGRESS_BUCKETS.filter((bucket) => bucket.key !== "cancelled" || buckets.cancelled);
  const summary = shown.map((bucket) => `${bucket.label} ${buckets[bucket.key]}`).join(", ");
  return html`
    <div class="progress-block">
      <div
        class="progress"
        role="img"
        aria-label=${`${label}: ${summary} of ${buckets.total}`}
        data-total=${buckets.total}
      >
        ${shown.map((bucket) =>
          buckets[bucket.key] && buckets.total
            ? html`<span
                class=${`segment segment-${bucket.key}`}
                style=${`width: ${(100 * buckets[bucket.key]) / buckets.total}%`}
              ></span>`
            : null,
        )}
      </div>
      <ul class="legend" aria-label=${`${label} counts`}>
        ${shown.map(
          (bucket) => html`<li data-bucket=${bucket.key}>
            <span class=${`swatch segment-${bucket.key}`} aria-hidden="true"></span>
            ${bucket.label}: <strong>${buckets[bucket.key]}</strong>
          </li>`,
        )}
        <li data-bucket="total">of <strong>${buckets.total}</strong></li>
      </ul>
    </div>
  `;
}
