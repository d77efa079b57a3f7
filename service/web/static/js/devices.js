// Devices: a filterable list, and one device with its per-core state and its rollout jobs.

import { useState } from "preact/hooks";
import { get } from "./api.js";
import { isOnline } from "./overview.js";
import {
  Badge,
  ErrorBox,
  Loading,
  Table,
  formatTime,
  html,
  link,
  stageNumber,
  usePoll,
} from "./ui.js";

const deviceHref = (id) => link(`/devices/${encodeURIComponent(id)}`);
const rolloutHref = (id) => link(`/rollouts/${encodeURIComponent(id)}`);

export function DeviceList() {
  const [filters, setFilters] = useState({ hardware_id: "", profile: "" });
  const { data, error } = usePoll(
    () => get("/devices", { ...filters, limit: 1000 }),
    [filters.hardware_id, filters.profile],
  );
  const field = (name, label) => html`<label class="inline">
    ${label}
    <input
      type="search"
      value=${filters[name]}
      onChange=${(event) => setFilters({ ...filters, [name]: event.target.value.trim() })}
    />
  </label>`;
  return html`
    <section aria-labelledby="devices-heading">
      <h1 id="devices-heading">Devices</h1>
      <form class="filters" onSubmit=${(event) => event.preventDefault()}>
        ${field("hardware_id", "Hardware")} ${field("profile", "Profile")}
      </form>
      <${ErrorBox} error=${error} />
      ${!data
        ? !error && html`<${Loading} what="devices" />`
        : html`<${Table}
            caption=${data.next_after ? "Devices (first 1000)" : "Devices"}
            headers=${["Device", "Hardware", "Profile", "Agent", "Online", "Last seen"]}
            empty="No devices match."
            rows=${data.items.map((device) => [
              html`<a href=${deviceHref(device.id)}>${device.id}</a>`,
              device.hardware_id,
              device.profile,
              device.agent_version || "—",
              isOnline(device) ? "online" : "offline",
              formatTime(device.last_seen),
            ])}
          />`}
    </section>
  `;
}

async function loadDevice(id) {
  const path = `/devices/${encodeURIComponent(id)}`;
  const [device, jobs] = await Promise.all([get(path), get(`${path}/jobs`)]);
  return { device, jobs: jobs.items };
}

export function DeviceDetail({ id }) {
  const { data, error } = usePoll(() => loadDevice(id), [id]);
  if (!data) {
    return html`<h1>Device ${id}</h1>
      <${ErrorBox} error=${error} />${!error && html`<${Loading} what="the device" />`}`;
  }
  const { device, jobs } = data;
  const tags = Object.entries(device.tags || {});
  return html`
    <section aria-labelledby="device-heading">
      <p><a href="#/devices">← All devices</a></p>
      <h1 id="device-heading">Device ${device.id}</h1>
      <${ErrorBox} error=${error} />
      <dl class="facts" aria-label="Device facts">
        <div><dt>Hardware</dt><dd>${device.hardware_id}</dd></div>
        <div><dt>Profile</dt><dd>${device.profile}</dd></div>
        <div><dt>Agent version</dt><dd>${device.agent_version || "—"}</dd></div>
        <div><dt>Installed release</dt><dd>${device.release || "—"}</dd></div>
        <div><dt>Status</dt><dd>${isOnline(device) ? "online" : "offline"}</dd></div>
        <div><dt>Last seen</dt><dd>${formatTime(device.last_seen)}</dd></div>
        <div><dt>Registered</dt><dd>${formatTime(device.created_at)}</dd></div>
        <div>
          <dt>Tags</dt>
          <dd>${tags.length ? tags.map(([key, value]) => `${key}=${value}`).join(", ") : "—"}</dd>
        </div>
      </dl>
      <${Table}
        caption="Cores"
        headers=${["Core", "Slot", "Model", "Model version", "State"]}
        empty="The device has not reported its cores."
        rows=${(device.cores || []).map((core) => [
          core.core,
          core.slot ?? "—",
          core.model_id ?? "—",
          core.model_version ?? "—",
          html`<${Badge} value=${core.state ?? "unknown"} />`,
        ])}
      />
      <${Table}
        caption="Jobs"
        headers=${["Rollout", "Release", "Stage", "State", "Attempts", "Reason", "Updated"]}
        empty="No rollout has touched this device."
        rows=${jobs.map((job) => [
          html`<a href=${rolloutHref(job.rollout_id)}>${job.rollout_id}</a>`,
          job.release_id,
          stageNumber(job.stage),
          html`<${Badge} value=${job.state} />`,
          job.attempts,
          job.reason || "",
          formatTime(job.updated_at),
        ])}
      />
    </section>
  `;
}
