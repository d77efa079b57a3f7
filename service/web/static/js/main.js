// The dashboard shell: sign-in, navigation and a hash router (#/, #/rollouts/ID, #/devices/ID, ...).

import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { clearToken, get, getToken, setToken, takeTokenFromUrl } from "./api.js";
import { DeviceDetail, DeviceList } from "./devices.js";
import { Overview } from "./overview.js";
import { RolloutDetail, RolloutList } from "./rollouts.js";
import { Telemetry } from "./telemetry.js";
import { ErrorBox, REFRESH_SECONDS, html } from "./ui.js";

const NAV = [
  { path: "/", label: "Overview", match: (parts) => parts.length === 0 },
  { path: "/rollouts", label: "Rollouts", match: (parts) => parts[0] === "rollouts" },
  { path: "/devices", label: "Devices", match: (parts) => parts[0] === "devices" },
  { path: "/telemetry", label: "Telemetry", match: (parts) => parts[0] === "telemetry" },
];

function currentRoute() {
  const hash = window.location.hash.replace(/^#/, "") || "/";
  return hash.split("/").filter(Boolean).map(decodeURIComponent);
}

function useRoute() {
  const [parts, setParts] = useState(currentRoute());
  useEffect(() => {
    const update = () => setParts(currentRoute());
    window.addEventListener("hashchange", update);
    return () => window.removeEventListener("hashchange", update);
  }, []);
  return parts;
}

function View({ parts }) {
  const [section, id] = parts;
  if (!section) return html`<${Overview} />`;
  if (section === "rollouts") return id ? html`<${RolloutDetail} id=${id} />` : html`<${RolloutList} />`;
  if (section === "devices") return id ? html`<${DeviceDetail} id=${id} />` : html`<${DeviceList} />`;
  if (section === "telemetry") return html`<${Telemetry} release=${id} />`;
  return html`<h1>Not found</h1><p>No page at #/${parts.join("/")}. <a href="#/">Overview</a></p>`;
}

function Login({ problem, onSignedIn }) {
  const [value, setValue] = useState("");
  const [error, setError] = useState(problem);
  const submit = async (event) => {
    event.preventDefault();
    setToken(value.trim());
    try {
      await get("/rollouts", { limit: 1 });
      onSignedIn();
    } catch (failure) {
      clearToken();
      setError(failure);
    }
  };
  return html`
    <main class="login">
      <h1>tinyfleet</h1>
      <form onSubmit=${submit} aria-labelledby="login-heading">
        <h2 id="login-heading">Sign in</h2>
        <p class="muted">
          Paste an API token (any role; viewer is enough to look, operator to send commands).
        </p>
        <label>
          API token
          <input
            type="password"
            autocomplete="off"
            required
            value=${value}
            onInput=${(event) => setValue(event.target.value)}
          />
        </label>
        <button type="submit">Sign in</button>
        <${ErrorBox} error=${error} />
      </form>
    </main>
  `;
}

function App() {
  const [signedIn, setSignedIn] = useState(Boolean(getToken()));
  const [problem, setProblem] = useState(null);
  const parts = useRoute();
  useEffect(() => {
    const expired = () => {
      clearToken();
      setProblem({ message: "The token was refused; sign in again.", code: "unauthorized" });
      setSignedIn(false);
    };
    window.addEventListener("tinyfleet:unauthorized", expired);
    return () => window.removeEventListener("tinyfleet:unauthorized", expired);
  }, []);
  if (!signedIn) {
    return html`<${Login} problem=${problem} onSignedIn=${() => setSignedIn(true)} />`;
  }
  const signOut = () => {
    clearToken();
    setProblem(null);
    setSignedIn(false);
  };
  return html`
    <header class="top">
      <span class="brand">tinyfleet</span>
      <nav aria-label="Main">
        <ul>
          ${NAV.map(
            (item) => html`<li>
              <a href=${`#${item.path}`} aria-current=${item.match(parts) ? "page" : undefined}>
                ${item.label}
              </a>
            </li>`,
          )}
        </ul>
      </nav>
      <span class="muted refresh">refreshes every ${REFRESH_SECONDS} s</span>
      <button type="button" class="link" onClick=${signOut}>Sign out</button>
    </header>
    <main><${View} parts=${parts} /></main>
  `;
}

takeTokenFromUrl();
const root = document.getElementById("app");
root.replaceChildren();
render(html`<${App} />`, root);
