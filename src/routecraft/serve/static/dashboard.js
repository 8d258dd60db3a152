// routecraft gateway dashboard: the window and refresh selectors, and the auto-refresh (fetches this page's
// <main> with ?part=content and swaps it in, keeping open candidate tables open). No external code.
(function () {
  "use strict";
  var content = document.getElementById("content");
  var form = document.getElementById("controls");
  if (!content || !form) { return; }
  var win = document.getElementById("window");
  var refresh = document.getElementById("refresh");
  var updated = document.getElementById("updated");
  var timer = null;
  var busy = false;

  function stamp(ok, text) {
    updated.textContent = text;
    updated.className = ok ? "meta" : "meta stale";
  }

  function pageURL(part) {
    var u = new URL(window.location.href);
    u.searchParams.set("window", win.value);
    u.searchParams.set("refresh", refresh.value);
    u.searchParams.delete("part");
    if (part) { u.searchParams.set("part", part); }
    return u;
  }

  function schedule() {
    if (timer !== null) { clearTimeout(timer); timer = null; }
    var s = parseInt(refresh.value, 10);
    if (s > 0) { timer = setTimeout(tick, s * 1000); }
  }

  function tick() {
    if (busy) { return; }
    busy = true;
    var open = Array.prototype.map.call(content.querySelectorAll("details[open]"), function (d) {
      return d.getAttribute("data-request-id");
    });
    fetch(pageURL("content"), { credentials: "same-origin", cache: "no-store" }).then(function (r) {
      if (r.status === 401 || r.status === 403) { window.location.reload(); return null; }
      if (!r.ok) { throw new Error("HTTP " + r.status); }
      return r.text();
    }).then(function (html) {
      if (html === null) { return; }
      content.innerHTML = html;
      open.forEach(function (id) {
        var d = content.querySelector('details[data-request-id="' + CSS.escape(id || "") + '"]');
        if (d) { d.open = true; }
      });
      stamp(true, "updated " + new Date().toLocaleTimeString());
      document.body.setAttribute("data-refreshed", String(Date.now()));
    }).catch(function (err) {
      stamp(false, "refresh failed (" + err.message + ")");
    }).finally(function () {
      busy = false;
      schedule();
    });
  }

  win.addEventListener("change", function () { window.location.assign(pageURL(null)); });
  refresh.addEventListener("change", function () {
    window.history.replaceState(null, "", pageURL(null));
    schedule();
  });
  stamp(true, "loaded " + new Date().toLocaleTimeString());
  schedule();
}());
