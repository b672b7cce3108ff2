// Click a column header to sort its table; click again to reverse. Rows without a value stay
// at the bottom either way, and equal values keep the published order.
(function () {
  "use strict";
  function missing(value) { return value === undefined || value === ""; }
  function compare(a, b, numeric) {
    if (numeric) { return parseFloat(a) - parseFloat(b); }
    return a < b ? -1 : (a > b ? 1 : 0);
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    var headers = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(headers, function (th, column) {
      var button = th.querySelector("button");
      if (!button) { return; }
      button.addEventListener("click", function () {
        var ascending = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(headers, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        var numeric = th.getAttribute("data-type") === "number";
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (r, s) {
          var a = r.cells[column].getAttribute("data-sort"), b = s.cells[column].getAttribute("data-sort");
          var order = +r.getAttribute("data-index") - +s.getAttribute("data-index");
          if (missing(a) || missing(b)) {
            return missing(a) && missing(b) ? order : (missing(a) ? 1 : -1);
          }
          var c = compare(a, b, numeric);
          return c === 0 ? order : (ascending ? c : -c);
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  });
}());
