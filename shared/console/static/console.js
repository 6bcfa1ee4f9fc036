"use strict";
// The operator console. Every call is relative to this page (…/api/ops/console), so the page works
// wherever the app is served; the key goes in the x-functions-key header, never in a URL.
(function () {
  const KEY = "ml-connector-key";
  const REFRESH_MS = 10000;
  const $ = (id) => document.getElementById(id);
  const state = { view: "story", story: "", doctorLoaded: false };

  // The key: taken from ?code= once, kept for this tab only, and removed from the address bar.
  const params = new URLSearchParams(location.search);
  if (params.has("code")) {
    sessionStorage.setItem(KEY, params.get("code"));
    params.delete("code");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
  }
  const key = () => sessionStorage.getItem(KEY) || "";

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }
  function row(cells) {
    const tr = el("tr");
    for (const cell of cells) {
      tr.appendChild(cell instanceof Node ? wrap(cell) : el("td", cell === null || cell === undefined ? "" : cell));
    }
    return tr;
  }
  function wrap(node) { const td = el("td"); td.appendChild(node); return td; }
  function fill(tableId, rows) {
    const body = $(tableId).tBodies[0];
    body.replaceChildren(...rows);
  }
  function time(iso) { return iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace("+00:00", "Z") : ""; }
  function say(text, isError) {
    $("status").textContent = text || "";
    $("status").className = isError ? "error" : "";
  }

  async function api(path, body) {
    const init = { headers: { "x-functions-key": key() }, cache: "no-store" };
    if (body !== undefined) {
      init.method = "POST";
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (response.status === 401 || response.status === 403) {
      say("The key was refused: type the master key above.", true);
    }
    return { status: response.status, data: data };
  }
  function failed(what, answer) {
    const message = answer.data && answer.data.message ? answer.data.message : "HTTP " + answer.status;
    if (answer.status !== 401 && answer.status !== 403) say(what + ": " + message, true);
  }

  // --- live counters -------------------------------------------------------------------------
  async function loadCounters() {
    const answer = await api("counters");
    if (answer.status !== 200) return failed("counters", answer);
    const data = answer.data;
    const queues = data.queues.map((q) => {
      const span = el("span", null, "queue");
      span.dataset.queue = q.queue;
      span.append(q.queue + " ", el("b", q.messages === null ? "?" : q.messages), " ");
      span.appendChild(el("span", "poison " + (q.poison === null ? "?" : q.poison), q.poison ? "poison" : "muted"));
      return span;
    });
    $("queues").replaceChildren(...queues);
    $("sends").replaceChildren(...data.sends_per_minute.map((m) => {
      const s = el("span", m.sends); s.title = m.minute; return s;
    }));
    $("failures-hourly").replaceChildren(...data.failures_per_hour.map((h) => {
      const s = el("span", h.failures, h.failures ? "hot" : ""); s.title = h.hour; return s;
    }));
    $("counters-at").textContent = "as of " + time(data.at) + (data.limited ? " (some counts stopped at their limit)" : "");
  }

  // --- story -----------------------------------------------------------------------------------
  async function loadStory(query) {
    state.story = query;
    const answer = await api("story?q=" + encodeURIComponent(query));
    if (answer.status !== 200) return failed("search", answer);
    const data = answer.data;
    const count = data.records.length + data.correlation_ids.length;
    $("story-found").textContent = count === 0
      ? "Nothing found by " + data.by + " (searches of document numbers and phones cover " + data.search_days + " days)."
      : count + " match(es) by " + data.by + (data.limited ? "; the scan stopped at its limit" : "") + ".";
    const matches = [...data.records.map((r) => ["record", r]), ...data.correlation_ids.map((c) => ["correlation", c])];
    $("story-matches").replaceChildren(...(count > 1 ? matches.map(([kind, value]) => {
      const li = el("li"); const a = el("a", value); a.href = "#"; a.dataset.kind = kind;
      a.addEventListener("click", (event) => { event.preventDefault(); $("story-query").value = value; loadStory(value); });
      li.appendChild(a); return li;
    }) : []));
    fill("story-contacts", data.contacts.map((c) => row([c.channel, c.to, c.status, c.provider_id,
      [c.reason, c.error_code ? "error " + c.error_code : ""].filter(Boolean).join("; ")])));
    $("story-timeline").replaceChildren(...data.timeline.map((entry) => {
      const bad = ["failed", "dead-lettered", "expired", "suppressed", "note-failed", "retrying"].includes(entry.step) ||
        ["failed", "undelivered", "busy", "no-answer", "canceled"].includes(entry.detail.status);
      const li = el("li", null, entry.stage + (bad ? " bad" : ""));
      li.dataset.step = entry.step;
      li.append(el("span", time(entry.at) + " ", "muted"), el("span", entry.stage, "stage"), el("span", entry.step, "step"));
      const detail = Object.entries(entry.detail).map(([k, v]) => k + "=" + (typeof v === "object" ? JSON.stringify(v) : v));
      if (entry.job_id) detail.unshift("job " + entry.job_id.slice(0, 12));
      li.append(el("span", detail.join("  ")));
      return li;
    }));
  }

  // --- failures, replay and redrive ----------------------------------------------------------
  async function loadFailures() {
    const answer = await api("failures");
    if (answer.status !== 200) return failed("failures", answer);
    const data = answer.data;
    fill("failed-jobs", data.jobs.map((job) => {
      const button = el("button", "Replay"); button.type = "button"; button.dataset.job = job.job_id;
      button.addEventListener("click", () => replay(job.job_id));
      const tr = row([time(job.updated_at), job.status, job.channel, job.to, job.record, job.reason, button]);
      tr.cells[5].className = "reason"; tr.dataset.job = job.job_id; return tr;
    }));
    fill("dead-letters", data.dead_letters.map((letter) => {
      const button = el("button", "Redrive"); button.type = "button"; button.dataset.letter = letter.id;
      button.addEventListener("click", () => redrive(letter.id));
      const tr = row([time(letter.at), letter.queue, letter.type, letter.record || letter.key, letter.reason, button]);
      tr.cells[4].className = "reason"; tr.dataset.letter = letter.id; return tr;
    }));
  }

  // Every replay and redrive is first asked as a dry run; only a confirmed preview acts.
  function confirmPreview(title, preview, reason) {
    const dialog = $("confirm");
    $("confirm-title").textContent = title;
    const rows = Object.entries(preview).filter(([, v]) => v !== "" && v !== null && v !== undefined)
      .map(([k, v]) => { const tr = el("tr"); tr.append(el("th", k), el("td", v)); return tr; });
    const why = el("tr"); why.append(el("th", "what"), el("td", reason)); rows.unshift(why);
    $("confirm-preview").tBodies[0].replaceChildren(...rows);
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.returnValue = "";
      dialog.showModal();
    });
  }
  async function replay(jobId) {
    const preview = await api("replay", { job_id: jobId, dry_run: true });
    if (preview.status !== 200) return failed("replay preview", preview);
    const [job] = preview.data.jobs;
    if (!job.would_replay) return say("Not replayed: " + job.reason, true);
    if (!(await confirmPreview("Replay job " + jobId.slice(0, 12) + "?", job.preview, job.reason))) {
      return say("Replay cancelled; nothing was sent.");
    }
    const done = await api("replay", { job_id: jobId });
    if (done.status !== 200) return failed("replay", done);
    say(done.data.replayed ? "Replayed: " + done.data.jobs[0].reason : "Not replayed: " + done.data.jobs[0].reason,
      !done.data.replayed);
    refresh();
  }
  async function redrive(letterId) {
    const preview = await api("deadletters/redrive", { ids: [letterId], dry_run: true });
    if (preview.status !== 200) return failed("redrive preview", preview);
    const [letter] = preview.data.dead_letters;
    if (!letter.would_redrive) return say("Not redriven: " + letter.reason, true);
    if (!(await confirmPreview("Redrive dead letter " + letterId.slice(0, 12) + "?", letter.preview, letter.reason))) {
      return say("Redrive cancelled; nothing was sent.");
    }
    const done = await api("deadletters/redrive", { ids: [letterId] });
    if (done.status !== 200) return failed("redrive", done);
    const result = done.data.dead_letters[0];
    say((done.data.redriven ? "Redriven: " : "Not redriven: ") + result.reason, !done.data.redriven);
    refresh();
  }

  // --- polls (GET /api/ops/polls) --------------------------------------------------------------
  async function loadPolls() {
    const answer = await api("polls");
    if (answer.status === 404) {
      fill("polls", []);
      $("polls-note").textContent = "Poll health is not available on this deployment.";
      return;
    }
    if (answer.status !== 200) return failed("polls", answer);
    $("polls-note").textContent = answer.data.polls.length ? "" : "No polled connections in the configuration.";
    fill("polls", answer.data.polls.map((p) => {
      const button = el("button", "Poll now"); button.type = "button";
      button.addEventListener("click", () => pollNow(p.connection, p.entity));
      const lag = p.lag_seconds === null || p.lag_seconds === undefined ? "" : Math.round(p.lag_seconds) + " s";
      const tr = row([p.connection, p.kind, p.entity, time(p.last_success), time(p.last_attempt), lag, p.watermark,
        p.failures, p.last_error, time(p.next_run), button]);
      if (p.failures) tr.cells[7].className = "fail";
      return tr;
    }));
  }
  async function pollNow(connection, entity) {
    const answer = await api("polls/run", { connection: connection, entity: entity });
    if (answer.status !== 202) return failed("poll now", answer);
    say("Queued " + answer.data.queued + " poll(s) of " + connection + " " + entity + ".");
  }

  // --- connections (GET /api/ops/doctor) -------------------------------------------------------
  async function runChecks() {
    $("doctor-summary").textContent = "Checking…";
    const answer = await api("doctor");
    if (answer.status === 404) {
      $("doctor-summary").textContent = "The connection doctor is not available on this deployment.";
      return;
    }
    if (answer.status !== 200) { $("doctor-summary").textContent = ""; return failed("checks", answer); }
    const data = answer.data;
    $("doctor-summary").textContent = (data.ok ? "Every check passed" : "Some checks failed") + " at " + time(data.checked_at);
    $("doctor").replaceChildren(...data.connections.map((c) => {
      const box = el("div");
      box.dataset.connection = c.connection;
      box.appendChild(el("h2", c.connection + " (" + c.kind + ") " + (c.ok ? "ok" : "failing"), c.ok ? "ok" : "fail"));
      const table = el("table"); const body = el("tbody"); table.appendChild(body);
      for (const check of c.checks) {
        const tr = row([check.ok ? "ok" : "failed", check.name, check.detail, check.fix || ""]);
        tr.cells[0].className = check.ok ? "ok" : "fail"; body.appendChild(tr);
      }
      box.appendChild(table); return box;
    }));
  }

  // --- tabs and refresh ----------------------------------------------------------------------------
  function show(view) {
    state.view = view;
    for (const tab of document.querySelectorAll("nav button")) {
      tab.setAttribute("aria-selected", String(tab.dataset.view === view));
    }
    for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== "view-" + view;
    refreshView();
  }
  function refreshView() {
    if (!key()) return say("Type the master key above (or open this page with ?code=<key>).", true);
    if (state.view === "failures") return loadFailures();
    if (state.view === "polls") return loadPolls();
    if (state.view === "story" && state.story) return loadStory(state.story);
  }
  function refresh() {
    if (!key()) return;
    loadCounters();
    refreshView();
  }

  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, $("key").value.trim());
    $("key").value = "";
    say("");
    refresh();
  });
  $("story-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const query = $("story-query").value.trim();
    if (query) loadStory(query);
  });
  $("run-checks").addEventListener("click", runChecks);
  for (const tab of document.querySelectorAll("nav button")) tab.addEventListener("click", () => show(tab.dataset.view));
  // Refresh by itself, but never under an open dialog: the operator is reading a preview.
  setInterval(() => { if (!$("confirm").open && !document.hidden) refresh(); }, REFRESH_MS);
  show("story");
  refresh();
})();
