// Rollouts: the list, and one rollout's stages, gate verdicts, jobs and operator commands.

import { useState } from "preact/hooks";
import { ApiError, get, post } from "./api.js";
import {
  Badge,
  ErrorBox,
  Loading,
  ProgressBar,
  Table,
  formatNumber,
  formatTime,
  html,
  link,
  stageNumber,
  stageText,
  usePoll,
} from "./ui.js";

const ROLLOUT_STATES = [
  "draft",
  "scheduled",
  "waiting_window",
  "running",
  "soaking",
  "awaiting_approval",
  "paused",
  "completed",
  "aborted",
  "rolling_back",
  "rolled_back",
];

// Commands an operator may send, and the states in which offering them makes sense. The
// service still decides (a refused command comes back as a 409 shown to the operator).
export const COMMANDS = [
  { command: "start", label: "Start", when: ["draft", "scheduled", "waiting_window"] },
  {
    command: "pause",
    label: "Pause",
    when: ["scheduled", "waiting_window", "running", "soaking", "awaiting_approval"],
  },
  { command: "resume", label: "Resume", when: ["paused"] },
  { command: "approve", label: "Approve", when: ["draft", "awaiting_approval", "paused"] },
  { command: "next-stage", label: "Next stage", when: ["soaking", "awaiting_approval", "paused"] },
  {
    command: "abort",
    label: "Abort",
    when: ["draft", "scheduled", "waiting_window", "running", "soaking", "awaiting_approval", "paused"],
  },
  {
    command: "rollback",
    label: "Roll back",
    when: ["running", "soaking", "awaiting_approval", "paused", "completed", "aborted"],
  },
];

const rolloutHref = (id) => link(`/rollouts/${encodeURIComponent(id)}`);
const deviceHref = (id) => link(`/devices/${encodeURIComponent(id)}`);

export function RolloutList() {
  const [state, setState] = useState("");
  const { data, error } = usePoll(() => get("/rollouts", { state }), [state]);
  return html`
    <section aria-labelledby="rollouts-heading">
      <h1 id="rollouts-heading">Rollouts</h1>
      <label class="inline">
        State
        <select value=${state} onChange=${(event) => setState(event.target.value)}>
          <option value="">any</option>
          ${ROLLOUT_STATES.map((name) => html`<option value=${name}>${name}</option>`)}
        </select>
      </label>
      <${ErrorBox} error=${error} />
      ${!data
        ? !error && html`<${Loading} what="rollouts" />`
        : html`<${Table}
            caption="All rollouts"
            headers=${["Rollout", "State", "Release", "Group", "Stage", "Progress", "Updated"]}
            empty="No rollouts."
            rows=${data.items.map((rollout) => [
              html`<a href=${rolloutHref(rollout.id)}>${rollout.id}</a>`,
              html`<${Badge} value=${rollout.state} />`,
              rollout.release_id,
              rollout.group_id,
              stageText(rollout),
              html`<${ProgressBar} counts=${rollout.totals} label=${`Rollout ${rollout.id} progress`} />`,
              formatTime(rollout.updated_at),
            ])}
          />`}
    </section>
  `;
}

async function loadRollout(id) {
  const path = `/rollouts/${encodeURIComponent(id)}`;
  const [rollout, jobs, verdicts] = await Promise.all([
    get(path),
    get(`${path}/jobs`, { limit: 1000 }),
    // Verdict history comes from the telemetry side; an older service may not have it.
    get(`${path}/verdicts`).catch((error) => {
      if (error instanceof ApiError && error.status === 404) return { items: [] };
      throw error;
    }),
  ]);
  return { rollout, jobs: jobs.items, moreJobs: Boolean(jobs.next_after), verdicts: verdicts.items };
}

function Numbers({ numbers }) {
  const entries = Object.entries(numbers || {});
  if (entries.length === 0) return html`<span class="muted">—</span>`;
  return html`<dl class="numbers">
    ${entries.map(
      ([name, value]) => html`<div>
        <dt>${name}:</dt>
        <dd>${typeof value === "object" && value !== null ? JSON.stringify(value) : formatNumber(value, 4)}</dd>
      </div>`,
    )}
  </dl>`;
}

function Commands({ rollout, onDone }) {
  const [reason, setReason] = useState("");
  const [busy, setBusy] = useState(false);
  const [message, setMessage] = useState(null);
  const [failure, setFailure] = useState(null);
  const send = async (command) => {
    setBusy(true);
    setMessage(null);
    setFailure(null);
    try {
      const body = reason ? { command, reason } : { command };
      const after = await post(`/rollouts/${encodeURIComponent(rollout.id)}/commands`, body);
      setMessage(`${command} accepted: rollout is ${after.state}`);
      setReason("");
      await onDone();
    } catch (error) {
      setFailure(error);
    } finally {
      setBusy(false);
    }
  };
  return html`
    <section class="commands" aria-labelledby="commands-heading">
      <h2 id="commands-heading">Operator commands</h2>
      <label class="inline">
        Reason
        <input
          type="text"
          value=${reason}
          placeholder="optional, recorded in the audit log"
          onInput=${(event) => setReason(event.target.value)}
        />
      </label>
      <div class="buttons" role="group" aria-label="Rollout commands">
        ${COMMANDS.map(
          (item) => html`<button
            type="button"
            class=${`command command-${item.command}`}
            disabled=${busy || !item.when.includes(rollout.state)}
            onClick=${() => send(item.command)}
          >
            ${item.label}
          </button>`,
        )}
      </div>
      ${message && html`<p class="ok" role="status">${message}</p>`}
      <${ErrorBox} error=${failure} />
    </section>
  `;
}

function Stage({ stage, current }) {
  const label = `Stage ${stage.index + 1} ${stage.name}`;
  return html`<li class=${`card stage${current ? " stage-current" : ""}`} aria-label=${label}>
    <h3>
      ${label} <${Badge} value=${stage.state} />
      ${current && html`<span class="muted"> (current)</span>`}
    </h3>
    <p class="muted">
      ${`planned ${stage.planned ?? "—"} devices · started ${formatTime(stage.started_at)} · ended ${formatTime(stage.ended_at)}`}
    </p>
    <${ProgressBar} counts=${stage.counts} planned=${stage.planned} label=${`${label} progress`} />
    ${stage.gate && html`<${StageDecision} gate=${stage.gate} label=${label} />`}
  </li>`;
}

// The verdict stored with the stage it decided: exactly what the stage moved on (or stopped on).
function StageDecision({ gate, label }) {
  const c = gate.cohorts || {};
  const n = (name) => (c[name] === undefined ? "?" : String(c[name]));
  return html`<div class="gate stage-gate" role="group" aria-label=${`${label} deciding gate verdict`}>
    <p>
      Gate <${Badge} value=${gate.verdict} /> ${gate.decided} the stage at ${formatTime(gate.at)}:
      ${gate.reason}
    </p>
    <p class="muted" data-testid="stage-gate-cohorts">
      ${`${n("stage_soaked")} of ${n("stage_devices")} stage devices soaked · canary ${n("canary_devices")} devices, ${n("canary_inferences")} inferences · control ${n("control_devices")} devices, ${n("control_inferences")} inferences`}
    </p>
  </div>`;
}

export function RolloutDetail({ id }) {
  const { data, error, reload } = usePoll(() => loadRollout(id), [id]);
  if (!data) {
    return html`<h1>Rollout ${id}</h1>
      <${ErrorBox} error=${error} />${!error && html`<${Loading} what="the rollout" />`}`;
  }
  const { rollout, jobs, moreJobs, verdicts } = data;
  const gate = rollout.gate;
  return html`
    <section aria-labelledby="rollout-heading">
      <p><a href="#/rollouts">← All rollouts</a></p>
      <h1 id="rollout-heading">Rollout ${rollout.id}</h1>
      <${ErrorBox} error=${error} />
      <dl class="facts" aria-label="Rollout facts">
        <div><dt>State</dt><dd data-testid="rollout-state"><${Badge} value=${rollout.state} /></dd></div>
        <div><dt>Stage</dt><dd>${stageText(rollout)}</dd></div>
        <div><dt>Release</dt><dd>${rollout.release_id}</dd></div>
        <div><dt>Previous release</dt><dd>${rollout.previous_release_id || "—"}</dd></div>
        <div><dt>Group</dt><dd>${rollout.group_id}</dd></div>
        <div><dt>Reason</dt><dd>${rollout.reason || "—"}</dd></div>
        <div><dt>Approvals</dt><dd>${(rollout.approvals || []).join(", ") || "—"}</dd></div>
        <div><dt>Updated</dt><dd>${formatTime(rollout.updated_at)}</dd></div>
      </dl>
      <${Commands} rollout=${rollout} onDone=${reload} />
      <h2>Overall progress</h2>
      <${ProgressBar} counts=${rollout.totals} label="Overall progress" />
      <h2>Stages</h2>
      <ol class="stages" aria-label="Stages">
        ${(rollout.stages || []).map(
          (stage) => html`<${Stage} stage=${stage} current=${stage.index === rollout.stage} />`,
        )}
      </ol>
      <h2>Health gate</h2>
      ${gate
        ? html`<div class="gate" aria-label="Current gate verdict" role="group">
            <p>Verdict: <${Badge} value=${gate.verdict} /> ${gate.reason}</p>
            <${Numbers} numbers=${gate.numbers} />
          </div>`
        : html`<p class="muted">No gate verdict yet.</p>`}
      <${Table}
        caption="Gate verdicts"
        headers=${["At", "Stage", "Verdict", "Reason", "Figures"]}
        empty="No verdicts recorded."
        rows=${verdicts.map((verdict) => [
          formatTime(verdict.at),
          stageNumber(verdict.stage),
          html`<${Badge} value=${verdict.verdict} />`,
          verdict.reason,
          html`<${Numbers} numbers=${verdict.numbers} />`,
        ])}
      />
      <${Table}
        caption=${moreJobs ? "Device jobs (first 1000)" : "Device jobs"}
        label="Device jobs"
        headers=${["Device", "Stage", "State", "Attempts", "Reason", "Updated"]}
        empty="No jobs yet."
        rows=${jobs.map((job) => [
          html`<a href=${deviceHref(job.device_id)}>${job.device_id}</a>`,
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
