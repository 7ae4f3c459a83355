// The dashboard's only script: renders each snapshot the manager pushes
// over server-sent events (/events). No reloads, no other origin.
"use strict";

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

// A replicated value: one value, or every sibling of a conflict.
function shown(v) {
  if (!v || v.length === 0) return el("span", "-");
  if (v.length === 1) return el("span", v[0]);
  return el("span", "CONFLICT(" + v.join(" | ") + ")", "conflict");
}

function row(cells, attrs) {
  const tr = document.createElement("tr");
  for (const [k, v] of Object.entries(attrs || {})) tr.setAttribute(k, v);
  for (const c of cells) {
    const td = document.createElement("td");
    td.appendChild(c instanceof Node ? c : el("span", String(c)));
    tr.appendChild(td);
  }
  return tr;
}

function fill(id, rows) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren(...rows);
}

function short(id) { return id.length > 13 ? id.slice(0, 13) : id; }

function render(s) {
  const c = s.controller;
  const ha = document.getElementById("ha");
  ha.textContent = "HA " + c.alive + "/" + c.desired + (c.short_because && c.alive < c.desired ? ": " + c.short_because : "");
  ha.className = "badge " + (c.alive >= c.desired ? "ok" : "short");
  document.getElementById("answered").textContent = "as seen by " + s.answered_by;
  const runs = (id) => c.owners.filter((o) => o[1] === id).map((o) => o[0]).join(", ");
  fill("managers", s.members.filter((m) => m.role === "manager").map((m) =>
    row([m.id, el("span", m.state, "state " + m.state), m.addr, m.generation, runs(m.id)],
        { "data-manager": m.id, "data-state": m.state })));
  fill("machines", s.status.machines.map((m) =>
    row([m.id, el("span", m.presence || "-", "state " + m.presence), shown(m.status), shown(m.addresses), shown(m.instance), shown(m.jobs)],
        { "data-machine": m.id, "data-state": m.presence })));
  fill("applications", s.status.applications.map((a) =>
    row([a.name, a.scale, shown(a.command),
         Object.entries(a.config).map(([k, v]) => k + "=" + (v.length === 1 ? v[0] : "CONFLICT(" + v.join(" | ") + ")")).join(" ")])));
  fill("units", s.status.units.map((u) =>
    row([u.id, shown(u.machine), el("span", u.agent || "-", "state " + u.agent), shown(u.status)], { "data-unit": u.id })));
  const tl = document.getElementById("timeline");
  tl.replaceChildren(...s.events.slice().reverse().map((e) => {
    const li = el("li");
    li.appendChild(el("time", new Date(e.at_unix_ms).toLocaleTimeString()));
    li.appendChild(el("span", e.kind, "kind"));
    li.appendChild(el("span", e.text));
    return li;
  }));
}

function connect() {
  const link = document.getElementById("link");
  const es = new EventSource("/events");
  es.onopen = () => { link.textContent = "live"; link.className = "badge ok"; };
  es.onmessage = (m) => { try { render(JSON.parse(m.data)); } catch (e) { console.error(e); } };
  es.onerror = () => { link.textContent = "disconnected, retrying"; link.className = "badge short"; };
}

document.addEventListener("DOMContentLoaded", connect);
