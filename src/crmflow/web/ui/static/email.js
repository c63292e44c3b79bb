// Email pages: progressive enhancement only. The inbox's filters apply as soon
// as they change (the Search button still works without JavaScript). Loaded
// from 'self' (no inline scripts: CSP).
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  for (const control of document.querySelectorAll("form[data-autosubmit] [data-autosubmit-change]")) {
    control.addEventListener("change", () => {
      if (control.form) control.form.requestSubmit();
    });
  }
});
