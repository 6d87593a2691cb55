/* Live batch pages: poll the JSON API and copy what it says into the page, until the batches end.
   The server formats every value (`shown`), so this script only places text: never HTML. */
(function () {
  "use strict";

  function cell(row, text, className) {
    var td = document.createElement("td");
    if (className) td.className = className;
    td.textContent = text;
    row.appendChild(td);
    return td;
  }

  function anchor(parent, href, text) {
    var a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    parent.appendChild(a);
    return a;
  }

  function showAll(root, data) {
    root.querySelectorAll("[data-show]").forEach(function (el) {
      var value = data.shown[el.getAttribute("data-show")];
      if (value !== undefined) el.textContent = value;
    });
  }

  function paintBar(bar, data) {
    bar.style.width = data.percent + "%";
    bar.setAttribute("aria-valuenow", data.percent);
    bar.className = "progress-bar bg-" + data.colour + (data.finished ? "" : " progress-bar-striped progress-bar-animated");
  }

  function paintErrors(table, errors) {
    var body = table.querySelector("tbody");
    body.textContent = "";
    if (!errors.length) {
      var none = document.createElement("tr");
      none.className = "text-muted";
      cell(none, "none").colSpan = 3;
      body.appendChild(none);
    }
    errors.forEach(function (e) {
      var row = document.createElement("tr");
      var code = document.createElement("code");
      code.textContent = e.code;
      anchor(cell(row, ""), table.getAttribute("data-codes") + "#" + e.code, "").appendChild(code);
      cell(row, e.sentence);
      cell(row, e.count, "text-right");
      body.appendChild(row);
    });
  }

  function paintItems(table, items) {
    var body = table.querySelector("tbody");
    if (!items.length) return;  // keep the "no items" row the server wrote
    body.textContent = "";
    items.forEach(function (i) {
      var row = document.createElement("tr");
      anchor(cell(row, ""), i.shown.jobs, String(i.position + 1)).title = "The jobs of this item's chunk";
      cell(row, i.shown.name, "text-break");
      var status = cell(row, "");
      var badge = document.createElement("span");
      badge.className = "fleet-item-" + i.status;
      badge.textContent = i.status;
      status.appendChild(badge);
      cell(row, i.attempts);
      var result = cell(row, "", "small text-break");
      if (i.error_code) {
        var code = document.createElement("code");
        code.textContent = i.error_code;
        anchor(result, i.shown.code_url, "").appendChild(code);
        result.appendChild(document.createTextNode(" "));
      }
      result.appendChild(document.createTextNode(i.shown.result));
      if (i.shown.download) {
        var link = document.createElement("a");
        link.href = i.shown.download;
        link.textContent = "download";
        result.appendChild(document.createTextNode(" "));
        result.appendChild(link);
      }
      cell(row, i.shown.cost);
      cell(row, i.shown.finished_at, "text-nowrap");
      body.appendChild(row);
    });
  }

  function poll(url, every, apply) {
    function tick() {
      fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json", "X-Fleet-Live": "1"}})
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) {
          if (data && apply(data) === false) return;  // finished: stop
          setTimeout(tick, every);
        })
        .catch(function () { setTimeout(tick, every * 2); });
    }
    setTimeout(tick, every);
  }

  var page = document.getElementById("batch");
  if (page && page.getAttribute("data-finished") !== "1") {
    var every = parseInt(page.getAttribute("data-poll-ms"), 10) || 1500;
    poll(page.getAttribute("data-api") + window.location.search, every, function (data) {
      showAll(page, data);
      paintBar(document.getElementById("batch-progress"), data);
      document.getElementById("batch-status").className = "badge badge-" + data.colour + " p-2";
      paintErrors(document.getElementById("batch-errors"), data.errors);
      paintItems(document.getElementById("batch-items"), data.items);
      document.querySelectorAll("#batch-actions form[data-action]").forEach(function (form) {
        form.hidden = !data.actions[form.getAttribute("data-action")];
      });
      if (data.finished) {
        page.setAttribute("data-finished", "1");
        document.getElementById("batch-live").textContent = "";
        return false;
      }
    });
  }

  var list = document.getElementById("batches");
  if (list && list.querySelector("tr[data-running='1']")) {
    poll(list.getAttribute("data-api") + window.location.search, parseInt(list.getAttribute("data-poll-ms"), 10) || 2000,
      function (data) {
        var running = 0;
        data.batches.forEach(function (b) {
          var row = list.querySelector("tr[data-batch='" + b.id + "']");
          if (!row) return;
          showAll(row, b);
          paintBar(row.querySelector(".progress-bar"), b);
          row.querySelector(".badge").className = "badge badge-" + b.colour;
          row.setAttribute("data-running", b.finished ? "0" : "1");
          if (!b.finished) running += 1;
        });
        return running > 0;
      });
  }
})();
