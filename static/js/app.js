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
const IMPORT_MODE = "imported";
const ACCEPTED_TYPES = ["image/png", "image/jpeg", "image/webp"];

function showField(field, shown) {
  field.hidden = !shown;
  // Disabled inputs are not posted: the server ignores the other modes' fields anyway.
  field.querySelectorAll("input, textarea, select").forEach((input) => { input.disabled = !shown; });
}

function applyMode(form) {
  const mode = form.querySelector("input[name=mode]:checked")?.value;
  const imageMode = mode === IMAGE_MODE;
  const importMode = mode === IMPORT_MODE;  // only the image: no prompt, strength or settings
  form.querySelectorAll(".prompt-field").forEach((field) => showField(field, !importMode));
  showField(form.querySelector("#image-section"), imageMode || importMode);
  showField(form.querySelector(".strength-field"), imageMode);
  showField(form.querySelector(".advanced"), !importMode);
  form.querySelectorAll(".size-field").forEach((field) => showField(field, !imageMode && !importMode));
  form.querySelector(".size-note").hidden = !imageMode;
  form.querySelector("#image-label").textContent = importMode ? "Image to edit" : "Init image";
  form.querySelector("button[type=submit]").textContent = importMode ? "Import" : "Generate";
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

// Why a chosen image cannot be uploaded, or "" if it can: the server's first checks, made before
// the upload (the init image here, the reference image of the drawer's subject tab).
function imageFileProblem(file, maxBytes) {
  if (!ACCEPTED_TYPES.includes(file.type)) return `${file.name} is not a PNG, JPEG or WebP image.`;
  if (file.size > maxBytes) {
    const megabytes = (file.size / 1024 / 1024).toFixed(1);
    return `${file.name} is ${megabytes} MB; the limit is ${maxBytes / 1024 / 1024} MB.`;
  }
  return "";
}

function chooseInitImage(form, input) {
  const file = input.files[0];
  showUploadError(form, "");
  if (!file) return clearInitImage(form);
  const problem = imageFileProblem(file, Number(form.dataset.maxUploadBytes));
  if (problem) {
    clearInitImage(form);
    return showUploadError(form, problem);
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

// The Refine Image drawer (refinement/drawer.html): a modal side panel. Focus moves into it when
// it opens, Tab stays inside it, Esc (or the × or the backdrop) closes it and focus returns to
// the button that opened it; the arrow keys, Home and End move between its tabs.
let drawerOpener = null;

function drawer() {
  return document.querySelector("#drawer[data-drawer]");
}

function closeDrawer() {
  const open = drawer();
  if (!open) return;
  // An empty placeholder takes its place; a refinement it was following goes on, and its card polls.
  const placeholder = document.createElement("div");
  placeholder.id = "drawer";
  open.replaceWith(placeholder);
  document.body.classList.remove("drawer-open");
  if (drawerOpener && drawerOpener.isConnected) drawerOpener.focus();
  drawerOpener = null;
}

function focusables(container) {
  return [...container.querySelectorAll(
    "a[href], button:not([disabled]), input:not([disabled]):not([type=hidden]), textarea:not([disabled]), select:not([disabled]), [tabindex]:not([tabindex='-1'])"
  )].filter((element) => !element.closest("[hidden]") && element.getClientRects().length);
}

function selectTab(tab) {
  const tablist = tab.closest("[role=tablist]");
  tablist.querySelectorAll("[role=tab]").forEach((other) => {
    const selected = other === tab;
    other.setAttribute("aria-selected", String(selected));
    other.tabIndex = selected ? 0 : -1;
    document.getElementById(other.getAttribute("aria-controls")).hidden = !selected;
  });
  tab.focus();
}

document.addEventListener("htmx:beforeRequest", (event) => {
  if (event.detail.target?.id === "drawer") drawerOpener = event.detail.elt;
});
document.addEventListener("htmx:load", (event) => {
  const element = event.detail.elt;
  if (element.matches?.("#drawer[data-drawer]")) {
    document.body.classList.add("drawer-open");
    (element.querySelector("[role=tab][aria-selected=true]") || focusables(element)[0])?.focus();
  } else if (element.matches?.(".live-log")) {
    element.querySelector(".log-title")?.focus();  // the submitted form is gone: say what runs now
  } else if (element.id === "drawer-body") {
    element.querySelector("[aria-invalid=true]")?.focus();  // the form came back with an error
  }
});
document.addEventListener("click", (event) => {
  if (event.target.closest("[data-close-drawer]")) return closeDrawer();
  const tab = event.target.closest("#drawer [role=tab]");
  if (tab) selectTab(tab);
});
document.addEventListener("keydown", (event) => {
  const open = drawer();
  if (!open) return;
  if (event.key === "Escape") {
    event.preventDefault();
    return closeDrawer();
  }
  const tab = event.target.closest?.("[role=tab]");
  if (tab && ["ArrowRight", "ArrowLeft", "Home", "End"].includes(event.key)) {
    const tabs = [...tab.closest("[role=tablist]").querySelectorAll("[role=tab]")];
    const index = tabs.indexOf(tab);
    const next = { ArrowRight: index + 1, ArrowLeft: index - 1, Home: 0, End: tabs.length - 1 }[event.key];
    event.preventDefault();
    return selectTab(tabs[(next + tabs.length) % tabs.length]);
  }
  if (event.key === "Tab") {
    const items = focusables(open);
    if (!items.length) return;
    const first = items[0], last = items[items.length - 1];
    if (!open.contains(document.activeElement)) {
      event.preventDefault();
      first.focus();
    } else if (event.shiftKey && document.activeElement === first) {
      event.preventDefault();
      last.focus();
    } else if (!event.shiftKey && document.activeElement === last) {
      event.preventDefault();
      first.focus();
    }
  }
});
