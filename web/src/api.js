// The console's only way to the cluster: its own server's JSON API (the user's credentials live there).
import { onMounted, onUnmounted, ref } from "vue";

export class ApiError extends Error {
  constructor(payload) {
    super(payload.message || "error");
    this.status = payload.status;
    this.title = payload.title || "Error";
    this.hint = payload.hint || "";
  }
}

async function call(method, path, body) {
  const opts = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (method !== "GET") {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body || {});
  }
  let res;
  try {
    res = await fetch(path, opts);
  } catch (e) {
    throw new ApiError({ status: 0, title: "Console unreachable", message: "Is `kubectl mysqlbackup ui` still running?" });
  }
  let data = null;
  try {
    data = await res.json();
  } catch (e) {
    data = null;
  }
  if (!res.ok) {
    throw new ApiError((data && data.error) || { status: res.status, message: res.statusText });
  }
  return data;
}

export const api = {
  get: (path) => call("GET", path),
  post: (path, body) => call("POST", path, body),
  del: (path) => call("DELETE", path, {}),
};

// Live updates: one EventSource fed by the server's Kubernetes watches; pages subscribe to resources.
const listeners = new Set();
export const liveState = ref("connecting");
let source = null;

function connect() {
  if (source) return;
  source = new EventSource("/api/watch");
  source.onopen = () => (liveState.value = "live");
  source.onerror = () => (liveState.value = "reconnecting");
  source.onmessage = (m) => {
    let note;
    try {
      note = JSON.parse(m.data);
    } catch (e) {
      return;
    }
    if (note.type === "error") liveState.value = "watch error: " + (note.message || "");
    for (const fn of listeners) fn(note);
  };
}

// Calls `reload` now and again (debounced) whenever one of `resources` changes in the cluster.
export function useLive(resources, reload) {
  let timer = null;
  const fn = (note) => {
    if (!resources.includes(note.resource)) return;
    clearTimeout(timer);
    timer = setTimeout(reload, 250);
  };
  onMounted(() => {
    connect();
    listeners.add(fn);
    reload();
  });
  onUnmounted(() => {
    listeners.delete(fn);
    clearTimeout(timer);
  });
}

export function bytes(n) {
  if (n === null || n === undefined || n === "") return "-";
  let size = Number(n);
  for (const unit of ["B", "KiB", "MiB", "GiB", "TiB"]) {
    if (size < 1024 || unit === "TiB") return unit === "B" ? `${size.toFixed(0)} B` : `${size.toFixed(1)} ${unit}`;
    size /= 1024;
  }
  return String(n);
}

export function when(ts) {
  if (!ts) return "-";
  const d = new Date(ts);
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z").replace(/Z$/, " UTC");
}

export function seconds(s) {
  if (s === null || s === undefined) return "-";
  if (s < 60) return `${Number(s).toFixed(1)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}
