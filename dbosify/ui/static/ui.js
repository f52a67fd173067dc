// dbosify ui: the run page's live history (server-sent events), its stack trace and actions.
// The only script of the view (its Content-Security-Policy allows no other, and no inline code).
"use strict";

function post(verb, body) {
  return fetch("/api/" + verb, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Dbosify-Action": "1" },
    body: JSON.stringify(body),
  }).then((r) => r.json()).catch(() => ({ error: "no answer from dbosify ui" }));
}

function runPage(run) {
  const wid = run.dataset.wid;
  const rid = run.dataset.rid;
  const ids = "wid=" + encodeURIComponent(wid) + "&rid=" + encodeURIComponent(rid);
  const history = document.getElementById("history");
  const live = document.getElementById("live");
  let last = parseInt(run.dataset.last, 10) || 0;
  let refreshing = false;
  let retry = 1000;
  let again = false;

  // One summary request at a time; a change seen meanwhile asks for one more afterwards, so the
  // last refresh always starts after the last event (the close) was written.
  function refreshSummary() {
    if (refreshing) {
      again = true;
      return;
    }
    refreshing = true;
    fetch("/run/summary?" + ids).then((r) => r.text()).then((html) => {
      document.getElementById("summary").innerHTML = html;
      bindActions();
    }).finally(() => {
      refreshing = false;
      if (again) {
        again = false;
        refreshSummary();
      }
    });
  }

  function connect() {
    const source = new EventSource("/api/events?" + ids + "&after=" + last);
    live.textContent = "live";
    live.className = "live on";
    source.onopen = () => { retry = 1000; };
    source.addEventListener("history", (msg) => {
      const data = JSON.parse(msg.data);
      if (data.id <= last) return;
      last = data.id;
      history.insertAdjacentHTML("beforeend", data.html);
      if (data.child) document.getElementById("children").insertAdjacentHTML("beforeend", data.child);
      refreshSummary();
    });
    source.addEventListener("closed", () => {
      source.close();
      live.textContent = "closed";
      live.className = "live";
      refreshSummary();
    });
    source.addEventListener("failure", (msg) => {
      source.close();
      live.textContent = JSON.parse(msg.data);
      live.className = "live error";
    });
    source.onerror = () => {
      source.close();
      live.textContent = "reconnecting…";
      live.className = "live";
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 30000); // the server may be refusing streams (429)
    };
  }

  function act(verb, body, question) {
    if (!window.confirm(question)) return;
    const result = document.getElementById("action-result");
    post(verb, Object.assign({ wid: wid, rid: rid }, body)).then((r) => {
      result.textContent = r.error ? "Error: " + r.error : r.done;
      result.className = r.error ? "error" : "ok";
    });
  }

  function bindActions() {
    const form = document.getElementById("signal-form");
    if (!form) return;
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const name = form.elements.name.value;
      act("signal", { name: name, input: form.elements.input.value }, "Send signal '" + name + "' to " + wid + "?");
    });
    document.getElementById("cancel-button").addEventListener("click", () =>
      act("cancel", {}, "Request cancellation of " + wid + "?"));
    document.getElementById("terminate-button").addEventListener("click", () =>
      act("terminate", { reason: document.getElementById("terminate-reason").value },
        "Terminate " + wid + "? Its code gets no chance to clean up."));
  }

  function loadStack() {
    const pre = document.getElementById("stack-trace");
    pre.textContent = "asking a worker…";
    // The stack trace query may replay the run: a POST with the action header, as the actions.
    post("stack", { wid: wid, rid: rid }).then((r) => {
      pre.textContent = r.stack !== undefined ? r.stack : "unavailable: " + r.error;
    });
  }

  bindActions();
  const stack = document.getElementById("stack");
  stack.addEventListener("toggle", () => { if (stack.open) loadStack(); });
  const status = document.getElementById("summary-data");
  if (status && status.dataset.status === "Running") {
    loadStack();
    connect();
  } else {
    live.textContent = "closed";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const run = document.getElementById("run");
  if (run) runPage(run);
});
