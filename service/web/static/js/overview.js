// Fleet overview: device counts by hardware, profile and online state; groups; releases; live rollouts.

import { get, getAll } from "./api.js";
import {
  Badge,
  ErrorBox,
  Loading,
  ProgressBar,
  Table,
  formatTime,
  html,
  link,
  stageText,
  usePoll,
} from "./ui.js";

// The API says whether a device is online, judged on the service's clock; the browser's clock
// may be off by hours, so it only judges devices from an API that does not say (older services).
export const ONLINE_SECONDS = 300;
export const FINISHED_ROLLOUT_STATES = ["draft", "completed", "aborted", "rolled_back"];

export function isOnline(device, now = Date.now()) {
  if (typeof device.online === "boolean") return device.online;
  if (!device.last_seen) return false;
  return now - new Date(device.last_seen).getTime() <= ONLINE_SECONDS * 1000;
}

function countBy(devices, key) {
  const table = new Map();
  for (const device of devices) {
    const name = key(device) || "(none)";
    const row = table.get(name) || { name, total: 0, online: 0 };
    row.total += 1;
    if (isOnline(device)) row.online += 1;
    table.set(name, row);
  }
  return [...table.values()].sort((a, b) => a.name.localeCompare(b.name));
}

async function loadOverview() {
  const [devices, groups, releases, rollouts] = await Promise.all([
    getAll("/devices"),
    get("/groups"),
    getAll("/releases"),
    get("/rollouts"),
  ]);
  return { devices, groups: groups.items, releases: releases.items, rollouts: rollouts.items };
}

function Stat({ label, value, id }) {
  return html`<div class="stat" role="group" aria-labelledby=${id}>
    <span class="stat-value" aria-describedby=${id}>${value}</span>
    <span class="stat-label" id=${id}>${label}</span>
  </div>`;
}

export function Overview() {
  const { data, error } = usePoll(loadOverview, []);
  if (!data) return html`<${ErrorBox} error=${error} />${!error && html`<${Loading} what="the fleet" />`}`;
  const devices = data.devices.items;
  const online = devices.filter((device) => isOnline(device)).length;
  const live = data.rollouts.filter((rollout) => !FINISHED_ROLLOUT_STATES.includes(rollout.state));
  const countRows = (rows) => rows.map((row) => [row.name, row.total, row.online]);
  return html`
    <section aria-labelledby="overview-heading">
      <h1 id="overview-heading">Fleet overview</h1>
      <${ErrorBox} error=${error} />
      <div class="stats">
        <${Stat} id="stat-devices" label="Devices" value=${devices.length} />
        <${Stat} id="stat-online" label="Online" value=${online} />
        <${Stat} id="stat-offline" label="Offline" value=${devices.length - online} />
        <${Stat} id="stat-groups" label="Groups" value=${data.groups.length} />
        <${Stat} id="stat-releases" label="Releases" value=${data.releases.length} />
        <${Stat} id="stat-live" label="Live rollouts" value=${live.length} />
      </div>
      ${!data.devices.complete &&
      html`<p class="muted">Showing the first ${devices.length} devices only.</p>`}
      <div class="columns">
        <${Table}
          caption="Devices by hardware"
          headers=${["Hardware", "Devices", "Online"]}
          rows=${countRows(countBy(devices, (device) => device.hardware_id))}
        />
        <${Table}
          caption="Devices by profile"
          headers=${["Profile", "Devices", "Online"]}
          rows=${countRows(countBy(devices, (device) => device.profile))}
        />
      </div>
      <h2>Live rollouts</h2>
      ${live.length === 0
        ? html`<p class="muted">No rollout is in progress.</p>`
        : html`<ul class="cards" aria-label="Live rollouts">
            ${live.map(
              (rollout) => html`<li class="card">
                <h3><a href=${link(`/rollouts/${encodeURIComponent(rollout.id)}`)}>${rollout.id}</a></h3>
                <p>
                  <${Badge} value=${rollout.state} />
                  ${` release ${rollout.release_id} to group ${rollout.group_id}, ${stageText(rollout)}`}
                </p>
                <${ProgressBar} counts=${rollout.totals} label=${`Rollout ${rollout.id} progress`} />
              </li>`,
            )}
          </ul>`}
      <${Table}
        caption="Groups"
        headers=${["Group", "Name", "Kind", "Selector", "Production", "Members"]}
        rows=${data.groups.map((group) => [
          group.id,
          group.name,
          group.kind,
          html`<code>${typeof group.selector === "string" ? group.selector : JSON.stringify(group.selector)}</code>`,
          group.production ? "yes" : "no",
          group.members,
        ])}
      />
      <${Table}
        caption="Releases"
        headers=${["Release", "Status", "Counter", "Hardware", "Models", "Created"]}
        rows=${data.releases.map((release) => [
          html`<a href=${link(`/telemetry/${encodeURIComponent(release.id)}`)}>${release.id}</a>`,
          html`<${Badge} value=${release.status} />`,
          release.counter,
          (release.hardware_ids || []).join(", "),
          (release.members || [])
            .map((member) => `core ${member.core}: ${member.model_id || member.kind} v${member.version}`)
            .join("; "),
          formatTime(release.created_at),
        ])}
      />
    </section>
  `;
}
