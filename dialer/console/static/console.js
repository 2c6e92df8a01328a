// DialGate console: the little JavaScript it needs, no framework.
// The recording player refreshes the access log beside it whenever the browser has
// fetched more audio (each Range read is one logged access).
(function () {
  "use strict";
  function refreshLog(audio) {
    var url = audio.getAttribute("data-log-url");
    var body = document.querySelector("#access-log tbody");
    if (!url || !body) { return; }
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html !== null) {
          body.innerHTML = html;
          body.setAttribute("data-refreshed", String(Date.now()));
        }
      })
      .catch(function () { /* the log stays as it was; the server still logged the read */ });
  }
  document.addEventListener("DOMContentLoaded", function () {
    // Irreversible actions (approving a purge destroys keys) ask once more.
    Array.prototype.forEach.call(document.querySelectorAll("form[data-confirm]"), function (form) {
      form.addEventListener("submit", function (ev) {
        if (!window.confirm(form.getAttribute("data-confirm"))) { ev.preventDefault(); }
      });
    });
    var audio = document.getElementById("player");
    if (audio) {
      ["loadedmetadata", "playing", "seeked", "ended"].forEach(function (ev) {
        audio.addEventListener(ev, function () { refreshLog(audio); });
      });
    }
  });
})();
