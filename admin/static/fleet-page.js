/* What the panel's markup asks of script, without inline script (the CSP allows none):
   confirmations of forms (data-confirm), Flask-Admin's actions menu (data-model-action),
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

  window.fleetPage = {widths: widths};
  widths(document);
})();
