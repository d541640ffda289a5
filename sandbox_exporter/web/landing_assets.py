"""The landing page's inline style and script: no external asset, so the page works
offline and behind any proxy.

The script adds two things to a page that is complete without it:
- a "Run probe" link becomes a button: it asks `/probe?target=X&debug=true` in the
  background and shows that run's log lines (each as `time level event key=value`,
  values quoted as logfmt quotes them)
  in the page's "Probe runs" section, newest first; without JavaScript (or with a
  middle click) the link opens the plain-text log itself;
- the figures (`#live`) are fetched again every `data-refresh` seconds and swapped
  in place, so a probe's output, which lives outside `#live`, survives a refresh and
  a run in flight is not cut off; a failed refresh says so and keeps the last figures.
  Without JavaScript a `<noscript>` meta refresh reloads the whole page instead.
"""

from __future__ import annotations

STYLE = """
:root{color-scheme:light dark;--ok:#16794a;--bad:#b3261e;--muted:#6b6b6b;--line:#8884}
@media (prefers-color-scheme:dark){:root{--ok:#63d394;--bad:#ff8a80;--muted:#a8a8a8}}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:1em 2em}
h1{font-size:1.4em;margin:.2em 0}
h2{font-size:1.1em;margin:1.6em 0 .4em}
p{margin:.3em 0}
code,.message,pre{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:.95em}
table{border-collapse:collapse}
th,td{padding:4px 10px;text-align:left;vertical-align:top;border-bottom:1px solid var(--line)}
th{font-weight:600;white-space:nowrap}
th small{font-weight:400;color:var(--muted)}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.ok,tr.success .badge{color:var(--ok)}
.bad,tr.failure .badge,.late{color:var(--bad)}
.badge{font-weight:700}
tr.failure{background:#b3261e14}
.muted{color:var(--muted)}
.message{white-space:pre-wrap;word-break:break-word}
td.failure-detail{max-width:42em}
a.probe{display:inline-block;padding:2px 10px;border:1px solid currentColor;border-radius:4px;
text-decoration:none;white-space:nowrap}
a.probe.busy{opacity:.55;pointer-events:none}
.probe-run{border-left:4px solid var(--line);padding:.2em .8em;margin:.8em 0}
.probe-run.success{border-color:var(--ok)}
.probe-run.failure{border-color:var(--bad)}
.probe-run h3{font-size:1em;margin:.2em 0}
pre{white-space:pre-wrap;word-break:break-all;max-height:28em;overflow:auto;margin:.3em 0;
padding:.5em;background:#8881}
body.stale #live{opacity:.6}
svg.spark{display:block}
svg.spark .failed{fill:var(--bad)}
#not-found{margin:.3em 0;padding-left:1.4em}
""".strip()

SCRIPT = r"""
(function () {
  "use strict";
  document.documentElement.classList.add("js");  // scripting is on (tests read this)
  var inFlight = {};
  var section = document.getElementById("probes");
  var output = document.getElementById("probe-output");
  var refresh = Number(document.body.getAttribute("data-refresh")) || 0;

  function clock() { return new Date().toLocaleTimeString(); }

  function markBusy() {
    document.querySelectorAll("a.probe").forEach(function (link) {
      var busy = Boolean(inFlight[link.getAttribute("data-target")]);
      link.classList.toggle("busy", busy);
      link.setAttribute("aria-disabled", busy ? "true" : "false");
      link.textContent = busy ? "Probing\u2026" : "Run probe";
    });
  }

  function ms(seconds) {
    return seconds === null || seconds === undefined ? "?" : (seconds * 1000).toFixed(1) + " ms";
  }

  function verdict(response, text) {
    if (!response.ok) {
      return {text: "HTTP " + response.status + ": " + text.trim(), outcome: "failure"};
    }
    var lines = text.trim().split("\n");
    var result;
    try { result = JSON.parse(lines[lines.length - 1]); } catch (e) { result = null; }
    if (!result || result.event !== "result") { return {text: "answered", outcome: ""}; }
    if (result.success) {
      return {text: "success, time to exec " + ms(result.time_to_exec_seconds) +
              ", total " + ms(result.total_seconds), outcome: "success"};
    }
    var f = (result.failures || [])[0];
    return {text: f ? "failure: " + f.phase + " " + f.reason + ": " + f.message : "failure",
            outcome: "failure"};
  }

  function readable(text) {
    // each JSON log line as `time level event key=value ...`; anything else as it came
    return text.split("\n").map(function (line) {
      var entry;
      try { entry = JSON.parse(line); } catch (e) { return line; }
      if (!entry || typeof entry !== "object") { return line; }
      // ts is ISO 8601 in UTC, as every log line writes it: the time of day, to the ms
      var head = [typeof entry.ts === "string" ? entry.ts.slice(11, 23) : "",
                  entry.level || "", entry.event || ""];
      var rest = Object.keys(entry).filter(function (key) {
        return ["ts", "level", "event"].indexOf(key) < 0;
      }).map(function (key) {
        var value = entry[key];
        var bare = typeof value === "string" && /^[^\s"=]+$/.test(value);
        return key + "=" + (bare ? value : JSON.stringify(value));  // logfmt's quoting
      });
      return head.concat(rest).join(" ").trim();
    }).join("\n");
  }

  function probe(link) {
    var target = link.getAttribute("data-target");
    if (inFlight[target]) { return; }
    inFlight[target] = true;
    markBusy();
    section.hidden = false;
    var run = document.createElement("article");
    run.className = "probe-run running";
    run.setAttribute("data-target", target);
    var head = document.createElement("h3");
    head.textContent = target + ": running since " + clock() + "\u2026";
    var log = document.createElement("pre");
    run.appendChild(head);
    run.appendChild(log);
    output.insertBefore(run, output.firstChild);
    fetch(link.href, {cache: "no-store"}).then(function (response) {
      return response.text().then(function (text) {
        var said = verdict(response, text);
        log.textContent = readable(text);
        head.textContent = target + " at " + clock() + ": " + said.text;
        run.className = "probe-run done " + said.outcome;
      });
    }).catch(function (error) {
      head.textContent = target + " at " + clock() + ": the request failed: " + error.message;
      run.className = "probe-run done failure";
    }).then(function () {
      delete inFlight[target];
      markBusy();
    });
  }

  document.addEventListener("click", function (event) {
    var link = event.target.closest ? event.target.closest("a.probe") : null;
    if (!link || event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey) {
      return;  // a middle click or ctrl-click still opens the plain log in a new tab
    }
    event.preventDefault();
    probe(link);
  });

  function tick() {
    fetch(location.href, {cache: "no-store"}).then(function (response) {
      if (!response.ok) { throw new Error("HTTP " + response.status); }
      return response.text();
    }).then(function (text) {
      var fresh = new DOMParser().parseFromString(text, "text/html").getElementById("live");
      if (!fresh) { throw new Error("the answer was not this page"); }
      document.getElementById("live").replaceWith(document.adoptNode(fresh));
      document.body.classList.remove("stale");
      markBusy();
    }).catch(function (error) {
      document.body.classList.add("stale");
      document.getElementById("refresh-state").textContent = "Could not refresh at " +
        clock() + " (" + error.message + "): these figures are older.";
    }).then(function () {
      setTimeout(tick, refresh * 1000);
    });
  }

  if (refresh > 0) { setTimeout(tick, refresh * 1000); }
})();
""".strip()
