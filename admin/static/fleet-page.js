/* What the panel's markup asks of script, without inline script (the CSP allows none):
   confirmations of forms (data-confirm), Flask-Admin's actions menu (data-model-action, each
   entry with the count of the selected rows: "Retry selected (3)"),
   progress bar widths (data-width), and links to `javascript:void(0)` (Flask-Admin's
   placeholders) that must not navigate. */
(function () {
  "use strict";

  function widths(root) {
    root.querySelectorAll("[data-width]").forEach(function (bar) {
      bar.style.width = bar.getAttribute("data-width") + "%";
    });
  }

  document.addEventListener("submit", function (e) {
    var question = e.target.getAttribute && e.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) e.preventDefault();
  });

  document.addEventListener("click", function (e) {
    var link = e.target.closest && e.target.closest("a");
    if (!link) return;
    var action = link.getAttribute("data-model-action");
    if (action) {
      e.preventDefault();
      if (window.modelActions) window.modelActions.execute(action);
    } else if (/^javascript:/i.test(link.getAttribute("href") || "")) {
      e.preventDefault();
    }
  }, true);

  function countSelected() {
    var n = document.querySelectorAll("input.action-checkbox:checked").length;
    document.querySelectorAll("[data-model-action]").forEach(function (item) {
      if (!item.hasAttribute("data-label")) item.setAttribute("data-label", item.textContent.trim());
      var label = item.getAttribute("data-label");
      item.textContent = n ? label + " (" + n + ")" : label;
    });
  }

  document.addEventListener("change", function (e) {
    var box = e.target.classList;
    // after the other handlers of this change ("select all" checks the rows itself)
    if (box && (box.contains("action-checkbox") || box.contains("action-rowtoggle"))) setTimeout(countSelected, 0);
  });

  window.fleetPage = {widths: widths};
  widths(document);
})();
