// Calendar sync pages: progressive enhancement only. Every form works without
// JavaScript (a plain POST and a redirect); this only shows that a slow request
// (a sync talks to the calendar provider) is running, and keeps the hint of the
// chosen setting highlighted. Loaded from 'self' (no inline scripts: CSP).
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // Forms marked data-busy: a spinner on the button while the request runs,
  // and no second submit of the same form.
  for (const form of document.querySelectorAll("form[data-busy]")) {
    form.addEventListener("submit", (event) => {
      if (event.defaultPrevented) return; // e.g. a data-confirm the user declined
      if (form.dataset.busyNow === "1") {
        event.preventDefault();
        return;
      }
      form.dataset.busyNow = "1";
      const button = event.submitter || form.querySelector("button[type=submit]");
      if (!button) return;
      button.dataset.idleHtml = button.innerHTML;
      button.classList.add("is-busy");
      button.setAttribute("aria-busy", "true");
      button.textContent = form.dataset.busy;
      // Disabled after the submit has started, so the form is still sent.
      window.setTimeout(() => { button.disabled = true; }, 0);
    });
  }

  // Back/forward cache: a page restored from it must not keep a busy button.
  window.addEventListener("pageshow", (event) => {
    if (!event.persisted) return;
    for (const button of document.querySelectorAll("button.is-busy")) {
      button.classList.remove("is-busy");
      button.removeAttribute("aria-busy");
      button.disabled = false;
      if (button.dataset.idleHtml) button.innerHTML = button.dataset.idleHtml;
      if (button.form) delete button.form.dataset.busyNow;
    }
  });

  // Setting selects: highlight the hint of the chosen option.
  for (const select of document.querySelectorAll("select[aria-describedby]")) {
    const hints = document.getElementById(select.getAttribute("aria-describedby"));
    if (!hints || !hints.classList.contains("choice-hints")) continue;
    select.addEventListener("change", () => {
      const items = hints.querySelectorAll("li");
      items.forEach((item, i) => {
        item.classList.toggle("chosen", i === select.selectedIndex);
      });
    });
  }
});
