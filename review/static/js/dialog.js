// A modal prompt (text or choice) on <dialog>, and a short message in the corner.

const dialog = () => document.getElementById("prompt-dialog");

/**
 * Ask for a value. `choices` makes it a list; `required` refuses an empty answer.
 * Resolves to the value, or null when cancelled (Escape or Cancel).
 */
export function ask(title, { choices = null, value = "", required = false } = {}) {
  const d = dialog();
  const input = document.getElementById("prompt-input");
  const select = document.getElementById("prompt-select");
  document.getElementById("prompt-title").textContent = title;
  input.hidden = Boolean(choices);
  select.hidden = !choices;
  if (choices) {
    select.replaceChildren(...choices.map((c) => new Option(c, c, false, c === value)));
  } else {
    input.value = value;
    input.required = required;
  }
  return new Promise((resolve) => {
    const form = document.getElementById("prompt-form");
    const cancel = document.getElementById("prompt-cancel");
    const finish = (result) => {
      form.removeEventListener("submit", onSubmit);
      cancel.removeEventListener("click", onCancel);
      d.removeEventListener("cancel", onCancel);
      if (d.open) d.close();
      resolve(result);
    };
    const onSubmit = (e) => {
      e.preventDefault();
      const answer = choices ? select.value : input.value.trim();
      if (required && !answer) {
        input.setCustomValidity("Required");
        input.reportValidity();
        return;
      }
      input.setCustomValidity("");
      finish(answer);
    };
    const onCancel = (e) => {
      e.preventDefault();
      finish(null);
    };
    form.addEventListener("submit", onSubmit);
    cancel.addEventListener("click", onCancel);
    d.addEventListener("cancel", onCancel);
    d.showModal();
    (choices ? select : input).focus();
  });
}

let toastTimer = 0;

/** Show a message for a few seconds; `info` for good news, else an error. */
export function toast(message, info = false) {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.classList.toggle("info", info);
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    el.hidden = true;
  }, 6000);
}

/** True while a text field or the dialog has the keyboard (shortcuts stay off). */
export function typing(event) {
  const t = event.target;
  return dialog().open || t instanceof HTMLInputElement || t instanceof HTMLSelectElement ||
    t instanceof HTMLTextAreaElement;
}
