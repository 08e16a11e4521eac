// The little JavaScript the pages need beyond htmx.

// Run cards poll for their state only while their WebSocket is not open (see run_card.html).
function socketOpen(element) {
  const socketElement = element.closest("[ws-connect]");
  return Boolean(socketElement && socketElement.dataset.wsOpen);
}
document.addEventListener("htmx:wsOpen", (event) => { event.detail.elt.dataset.wsOpen = "1"; });
document.addEventListener("htmx:wsClose", (event) => { delete event.detail.elt.dataset.wsOpen; });

// The generate form: mode toggle, init image drop zone with preview, strength value.
// Handlers are delegated from the document, so they keep working after htmx swaps the form.
const IMAGE_MODE = "image_to_image";
const ACCEPTED_TYPES = ["image/png", "image/jpeg", "image/webp"];

function applyMode(form) {
  const imageMode = form.querySelector("input[name=mode]:checked")?.value === IMAGE_MODE;
  const section = form.querySelector("#image-section");
  section.hidden = !imageMode;
  // Disabled inputs are not posted: the server ignores the other mode's fields anyway.
  section.querySelectorAll("input").forEach((input) => { input.disabled = !imageMode; });
  form.querySelectorAll(".size-field").forEach((field) => {
    field.hidden = imageMode;
    field.querySelector("input").disabled = imageMode;
  });
  form.querySelector(".size-note").hidden = !imageMode;
}

function showUploadError(form, message) {
  const error = form.querySelector("#upload-error");
  error.textContent = message;
  error.hidden = !message;
}

function clearInitImage(form) {
  const input = form.querySelector("input[name=init_image]");
  const preview = form.querySelector("#init-preview");
  input.value = "";
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.removeAttribute("src");
  preview.hidden = true;
  form.querySelector("#remove-image").hidden = true;
  form.querySelector(".dropzone-hint").hidden = false;
}

function chooseInitImage(form, input) {
  const file = input.files[0];
  showUploadError(form, "");
  if (!file) return clearInitImage(form);
  const maxBytes = Number(form.dataset.maxUploadBytes);
  if (!ACCEPTED_TYPES.includes(file.type)) {
    clearInitImage(form);
    return showUploadError(form, `${file.name} is not a PNG, JPEG or WebP image.`);
  }
  if (file.size > maxBytes) {
    clearInitImage(form);
    const megabytes = (file.size / 1024 / 1024).toFixed(1);
    return showUploadError(form, `${file.name} is ${megabytes} MB; the limit is ${maxBytes / 1024 / 1024} MB.`);
  }
  const preview = form.querySelector("#init-preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  form.querySelector("#remove-image").hidden = false;
  form.querySelector(".dropzone-hint").hidden = true;
}

document.addEventListener("change", (event) => {
  const form = event.target.closest("#generate-form");
  if (!form) return;
  if (event.target.name === "mode") applyMode(form);
  if (event.target.name === "init_image") chooseInitImage(form, event.target);
});
document.addEventListener("input", (event) => {
  if (event.target.name !== "strength") return;
  const output = event.target.closest("form").querySelector("#strength-value");
  output.textContent = Number(event.target.value).toFixed(2);
});
document.addEventListener("click", (event) => {
  if (event.target.id !== "remove-image") return;
  const form = event.target.closest("form");
  clearInitImage(form);
  showUploadError(form, "");
});
// The file input covers the drop zone, so a drop lands on it natively; this only highlights.
["dragenter", "dragover"].forEach((type) => document.addEventListener(type, (event) => {
  event.target.closest?.(".dropzone")?.classList.add("dragging");
}));
["dragleave", "drop"].forEach((type) => document.addEventListener(type, (event) => {
  event.target.closest?.(".dropzone")?.classList.remove("dragging");
}));
