// Stepgate portal: small progressive enhancements. Every page works without this file.
// - [data-copy="<element id>"] buttons copy that element's text and say so.
// - Code inputs marked [data-autosubmit] send their form once 6 digits are typed.
(function () {
  "use strict";

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    // Plain-HTTP fallback: a temporary text area and the legacy copy command.
    return new Promise(function (resolve, reject) {
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.className = "offscreen";
      document.body.appendChild(area);
      area.select();
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      document.body.removeChild(area);
      if (ok) { resolve(); } else { reject(new Error("copy refused")); }
    });
  }

  document.querySelectorAll("[data-copy]").forEach(function (button) {
    var target = document.getElementById(button.getAttribute("data-copy"));
    if (!target) { return; }
    var label = button.textContent;
    var done = button.getAttribute("data-copied") || label;
    var status = document.getElementById(button.getAttribute("aria-describedby") || "");
    button.hidden = false;
    button.addEventListener("click", function () {
      var text = target.getAttribute("data-copy-text") || target.innerText.trim();
      copyText(text).then(function () {
        button.textContent = done;
        if (status) { status.textContent = done; }
        window.setTimeout(function () {
          button.textContent = label;
          if (status) { status.textContent = ""; }
        }, 2000);
      }, function () { /* the text stays on screen to copy by hand */ });
    });
  });

  // A code field submits itself once it holds as many digits as the code has
  // (data-autosubmit: 6 for mailed and texted codes, mfa.totp_digits for the app's).
  document.querySelectorAll("input[data-autosubmit]").forEach(function (input) {
    var wanted = parseInt(input.getAttribute("data-autosubmit"), 10);
    if (!(wanted > 0)) { return; }
    var sent = false;
    input.addEventListener("input", function () {
      var digits = input.value.replace(/\s+/g, "");
      if (!sent && digits.length === wanted && /^[0-9]+$/.test(digits) && input.form) {
        sent = true;
        if (input.form.requestSubmit) { input.form.requestSubmit(); } else { input.form.submit(); }
      }
      if (digits.length < wanted) { sent = false; }
    });
  });
})();
