/* Live pages: while the page is visible, fetch it again every few seconds and swap in its live
   regions (elements with data-live, and Flask-Admin's list table). Paused while hidden, while
   rows are selected or a menu or input has the focus, so nothing moves under the operator's hand. */
(function () {
  "use strict";
  var PERIOD = 5000;
  var timer = null;
  var fetching = false;

  function regions(root) {
    return root.querySelectorAll("[data-live], table.model-list");
  }

  function busy() {
    var active = document.activeElement;
    return document.querySelector("input.action-checkbox:checked, .dropdown-menu.show, .modal.show, #select2-drop") ||
      (active && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName));
  }

  function schedule() {
    clearTimeout(timer);
    timer = document.visibilityState === "visible" ? setTimeout(refresh, PERIOD) : null;
  }

  function swap(html) {
    var fresh = regions(new DOMParser().parseFromString(html, "text/html"));
    var current = regions(document);
    if (fresh.length !== current.length) return;
    for (var i = 0; i < current.length; i++) current[i].replaceWith(document.importNode(fresh[i], true));
    if (window.fleetPage) window.fleetPage.widths(document);
    document.body.setAttribute("data-live-updated", String(Date.now()));
  }

  function refresh() {
    if (document.visibilityState !== "visible" || busy()) return schedule();
    fetching = true;
    fetch(window.location.href, {credentials: "same-origin", headers: {"X-Fleet-Live": "1"}})
      .then(function (r) { return r.ok && !r.redirected ? r.text() : null; })
      .then(function (html) { if (html) swap(html); })
      .catch(function () { /* the next round tries again */ })
      .then(function () { fetching = false; schedule(); });
  }

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") refresh();
    else { clearTimeout(timer); timer = null; }
  });
  // Flask-Admin binds "select all" to the first table only; rows swapped in later need this.
  document.addEventListener("change", function (e) {
    if (e.target.classList && e.target.classList.contains("action-rowtoggle")) {
      document.querySelectorAll("input.action-checkbox").forEach(function (box) { box.checked = e.target.checked; });
    }
  });
  window.fleetLive = {polling: function () { return document.visibilityState === "visible" && (timer !== null || fetching); }};
  if (regions(document).length) schedule();
})();
