// crmflow UI behaviour. Progressive enhancement only: every form also works
// without JavaScript. Loaded from 'self' (the Content-Security-Policy forbids
// inline scripts).
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // New appointments default to the browser's time zone (IANA name from Intl).
  for (const select of document.querySelectorAll("select[data-browser-zone]")) {
    let zone;
    try {
      zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    } catch (_) {
      zone = null;
    }
    if (!zone) continue;
    let option = Array.from(select.options).find((o) => o.value === zone);
    if (!option) {
      option = new Option(zone.replaceAll("_", " "), zone);
      select.add(option);
    }
    select.value = zone;
  }

  // Destructive forms ask first.
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }

  // Copy buttons (the API token shown once).
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", async () => {
      const input = document.querySelector(button.dataset.copy);
      if (!input) return;
      input.select();
      try {
        await navigator.clipboard.writeText(input.value);
        button.textContent = "Copied";
      } catch (_) {
        button.textContent = "Press Ctrl+C";
      }
    });
  }

  // Password forms: show the help of the chosen provider.
  for (const select of document.querySelectorAll("select[data-preset-select]")) {
    const form = select.form;
    if (!form) continue;
    select.addEventListener("change", () => {
      for (const help of form.querySelectorAll("[data-preset-help]")) {
        help.hidden = help.dataset.presetHelp !== select.value;
      }
    });
  }

  // An empty end time follows the start (one hour later) until edited.
  const start = document.querySelector("#new-appointment #start");
  const end = document.querySelector("#new-appointment #end");
  if (start && end) {
    let touched = end.value !== "";
    end.addEventListener("input", () => { touched = true; });
    start.addEventListener("change", () => {
      if (touched || !start.value) return;
      const [date, time] = start.value.split("T");
      const [h, m] = time.split(":").map(Number);
      const d = new Date(`${date}T00:00:00`);
      d.setHours(h + 1, m);
      const pad = (n) => String(n).padStart(2, "0");
      end.value = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
    });
  }
});
