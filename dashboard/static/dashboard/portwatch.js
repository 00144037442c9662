// Portwatch's few lines of JS: the colour theme toggle, and live refresh of server-rendered fragments.
// No build step, no framework. The pages work without it; it only keeps them current.
(function () {
  "use strict";

  // Theme: "auto" follows the system; "light" and "dark" are kept in localStorage.
  var THEMES = ["auto", "light", "dark"];
  function applyTheme(theme) {
    if (theme === "auto") document.documentElement.removeAttribute("data-theme");
    else document.documentElement.setAttribute("data-theme", theme);
    document.querySelectorAll("[data-theme-toggle]").forEach(function (button) {
      button.setAttribute("aria-label", "Colour theme: " + (theme === "auto" ? "automatic" : theme));
      button.title = button.getAttribute("aria-label");
    });
  }
  var saved = null;
  try { saved = localStorage.getItem("portwatch-theme"); } catch (e) { /* private mode */ }
  if (saved && THEMES.indexOf(saved) > 0) document.documentElement.setAttribute("data-theme", saved);

  // Live refresh: an element with data-refresh="URL" is replaced by the HTML that URL returns (a
  // fragment the server renders with the same template), every data-every seconds while the tab is
  // visible and four times less often while it is hidden. A fragment being edited is left alone.
  var HIDDEN_FACTOR = 4;
  function busy(element) {
    var active = document.activeElement;
    if (active && element.contains(active) && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName)) return true;
    return element.querySelector("input[type=checkbox]:checked") !== null;
  }
  function refresh(element) {
    var url = element.getAttribute("data-refresh");
    if (!url || busy(element)) return Promise.resolve(element);
    return fetch(url, { headers: { "X-Requested-With": "fetch" }, credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) throw new Error(response.status);
        return response.text();
      })
      .then(function (html) {
        var holder = document.createElement("div");
        holder.innerHTML = html.trim();
        var fresh = holder.firstElementChild;
        if (!fresh || busy(element)) return element;
        element.replaceWith(fresh);
        return fresh;
      })
      .catch(function () { return element; });
  }
  function schedule(id) {
    var element = document.getElementById(id);
    if (!element) return;
    var every = parseFloat(element.getAttribute("data-every") || "15") * 1000;
    var wait = document.hidden ? every * HIDDEN_FACTOR : every;
    setTimeout(function () {
      refresh(document.getElementById(id) || element).then(function () { schedule(id); });
    }, wait);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var current = "auto";
    try { current = localStorage.getItem("portwatch-theme") || "auto"; } catch (e) { /* private mode */ }
    applyTheme(current);
    document.querySelectorAll("[data-theme-toggle]").forEach(function (button) {
      button.addEventListener("click", function () {
        current = THEMES[(THEMES.indexOf(current) + 1) % THEMES.length];
        try { localStorage.setItem("portwatch-theme", current); } catch (e) { /* private mode */ }
        applyTheme(current);
      });
    });
    document.querySelectorAll("[data-refresh][id]").forEach(function (element) { schedule(element.id); });
    document.addEventListener("visibilitychange", function () {
      if (document.hidden) return;
      document.querySelectorAll("[data-refresh][id]").forEach(function (element) { refresh(element); });
    });
    // Confirmations for destructive buttons: <button data-confirm="Delete mail?">
    document.addEventListener("submit", function (event) {
      var button = event.submitter;
      var message = button && button.getAttribute("data-confirm");
      if (message && !window.confirm(message)) event.preventDefault();
    });
    // "Select all" checkboxes: <input type=checkbox data-select-all="name">
    document.addEventListener("change", function (event) {
      var name = event.target.getAttribute && event.target.getAttribute("data-select-all");
      if (!name) return;
      document.querySelectorAll('input[type=checkbox][name="' + name + '"]').forEach(function (box) {
        box.checked = event.target.checked;
      });
    });
  });
})();
