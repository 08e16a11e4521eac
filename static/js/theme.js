// The colour theme: "auto" follows the system (prefers-color-scheme), "light" and "dark" are the
// user's choice from the switch in the top bar. Kept in localStorage under "theme", the key and
// values the Django admin's own toggle uses, so one choice serves the studio and the admin.
// Loaded in <head> without defer: html[data-theme] is set before the page is first painted.
(function () {
  const THEMES = ["auto", "light", "dark"];
  const root = document.documentElement;

  function stored() {
    try {
      return localStorage.getItem("theme");
    } catch {
      return null;  // storage refused (a privacy setting): follow the system
    }
  }

  function apply(theme) {
    root.dataset.theme = THEMES.includes(theme) ? theme : "auto";
    const select = document.getElementById("theme-switch");
    if (select) select.value = root.dataset.theme;
  }

  apply(stored());
  document.addEventListener("DOMContentLoaded", () => {
    apply(root.dataset.theme);  // the switch shows the theme in force
    document.getElementById("theme-switch")?.addEventListener("change", (event) => {
      apply(event.target.value);
      try {
        localStorage.setItem("theme", root.dataset.theme);
      } catch {
        // not remembered; it still applies to this page
      }
    });
  });
  // Chosen in another tab (or in the admin): follow it here too.
  window.addEventListener("storage", (event) => {
    if (event.key === "theme") apply(event.newValue);
  });
})();
