// Service detail page: "Check now" without leaving the page. The form posts with fetch and the
// result fragment the server renders (check_result.html) goes into #check-result. Without JS, the
// plain POST renders the whole page with the result in the same place.
(function () {
  "use strict";

  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("check-now-form");
    var target = document.getElementById("check-result");
    if (!form || !target || !window.fetch) return;
    var button = document.getElementById("check-now");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      button.disabled = true;
      button.setAttribute("aria-busy", "true");
      target.textContent = "Checking…";
      fetch(form.action, {
        method: "POST",
        body: new FormData(form),
        headers: { "X-Requested-With": "fetch" },
        credentials: "same-origin",
      })
        .then(function (response) {
          // 200 (a result) and 429 (too many checks) both carry a fragment to show.
          if (!response.ok && response.status !== 429) throw new Error("HTTP " + response.status);
          return response.text();
        })
        .then(function (html) { target.innerHTML = html; })
        .catch(function (error) { target.textContent = "The check could not be run (" + error.message + ")."; })
        .then(function () {
          button.disabled = false;
          button.removeAttribute("aria-busy");
        });
    });
  });
})();
