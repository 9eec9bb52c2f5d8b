// undying UI: live updates over server-sent events, local times, small conveniences.
// The server renders every page; this only swaps in the fragments it sends.
(function () {
  "use strict";

  var timeFormat = new Intl.DateTimeFormat(undefined, {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
  });

  function localizeTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (!isNaN(when.getTime())) {
        el.textContent = timeFormat.format(when);
        el.title = when.toISOString();
      }
    });
  }

  function setLive(state, label) {
    var el = document.getElementById("live-indicator");
    if (!el) return;
    el.dataset.state = state;
    el.querySelector(".live-label").textContent = label;
  }

  // -- the selected timeline row survives live updates ---------------------------------------
  var selected = new URLSearchParams(location.search).get("entry");

  function markSelected() {
    document.querySelectorAll(".tl-row").forEach(function (row) {
      row.classList.toggle("selected", row.dataset.seq === selected);
    });
  }

  // -- live updates ----------------------------------------------------------------------------
  // An update holds sections with ids; each replaces the element of the page with that id.
  var source = null;
  var sourceUrl = null;

  function apply(html) {
    var holder = document.createElement("template");
    holder.innerHTML = html;
    Array.prototype.slice.call(holder.content.children).forEach(function (fresh) {
      var old = fresh.id ? document.getElementById(fresh.id) : null;
      if (!old) return;
      old.replaceWith(fresh);
      if (window.htmx) window.htmx.process(fresh);
      localizeTimes(fresh);
    });
    markSelected();
  }

  function connect() {
    var root = document.querySelector("[data-stream]");
    var url = root ? root.dataset.stream : null;
    if (url === sourceUrl) return;
    if (source) source.close();
    source = null;
    sourceUrl = url;
    if (!url) {
      setLive("off", document.querySelector(".run-page") ? "finished" : "static");
      return;
    }
    source = new EventSource(url);
    source.addEventListener("open", function () { setLive("on", "live"); });
    source.addEventListener("error", function () {
      if (source && source.readyState !== EventSource.CLOSED) setLive("wait", "reconnecting");
    });
    source.addEventListener("update", function (event) { apply(event.data); });
    source.addEventListener("end", function () {
      source.close();
      setLive("off", "finished");
    });
  }

  // -- small conveniences ----------------------------------------------------------------------
  document.addEventListener("click", function (event) {
    var row = event.target.closest(".tl-row");
    if (row) {
      selected = row.dataset.seq;
      markSelected();
      return;
    }
    var link = event.target.closest("tr[data-href]");
    if (link && !event.target.closest("a") && !window.getSelection().toString()) {
      location.href = link.dataset.href;
    }
  });

  document.addEventListener("htmx:afterSettle", function (event) {
    localizeTimes(event.target);
    markSelected();
    connect();
  });

  function start() {
    localizeTimes(document);
    markSelected();
    connect();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
