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
  form.querySelector("#settings-import").hidden = importMode;
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
  // An earlier upload the form started from ("Use these settings" on an image-to-image run) goes too.
  form.querySelector("input[name=init_image_id]").value = "";
  if (preview.src.startsWith("blob:")) URL.revokeObjectURL(preview.src);
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
  if (preview.src.startsWith("blob:")) URL.revokeObjectURL(preview.src);
  form.querySelector("input[name=init_image_id]").value = "";  // the chosen file comes first
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  form.querySelector("#remove-image").hidden = false;
  form.querySelector(".dropzone-hint").hidden = true;
  // A PNG made by a Stable Diffusion tool may carry its settings: offer them (image to image only;
  // an import takes no settings).
  if (file.type === "image/png" && form.querySelector("input[name=mode]:checked")?.value === IMAGE_MODE) {
    readImageSettings(form, file, { quiet: true });
  }
}

// Settings from an image: a PNG chosen with "Settings from an image…", dropped anywhere on the form
// but the drop zone, or chosen as the init image. The server reads them (POST /api/v1/parameters,
// the one parser); the page shows what it found and fills the form only when asked to.
const SETTING_LABELS = {
  steps: "Steps", scheduler: "Sampler", guidance_scale: "CFG scale", seed: "Seed", strength: "Strength",
};

function settingsPart(form, name) {
  return form.querySelector(`#settings-${name}`);
}

function showSettingsError(form, message) {
  const error = settingsPart(form, "error");
  error.textContent = message;
  error.hidden = !message;
}

async function readImageSettings(form, file, { quiet = false } = {}) {
  showSettingsError(form, "");
  settingsPart(form, "offer").hidden = true;
  const body = new FormData();
  body.append("image", file);
  let answer;
  try {
    const response = await fetch(settingsPart(form, "import").dataset.settingsUrl, {
      method: "POST",
      body,
      headers: { "X-CSRFToken": form.querySelector("input[name=csrfmiddlewaretoken]").value },
      credentials: "same-origin",
    });
    answer = await response.json();
    if (!response.ok) return showSettingsError(form, answer.error || `The image could not be read (${response.status}).`);
  } catch (error) {
    return showSettingsError(form, "The image could not be read: the server did not answer.");
  }
  if (!answer.source) {
    if (!quiet) showSettingsError(form, answer.notes[0]);
    return;
  }
  offerSettings(form, file.name, answer);
}

function offerSettings(form, name, answer) {
  const fields = answer.fields;
  const words = [];
  if (fields.prompt) words.push(`“${fields.prompt.length > 80 ? fields.prompt.slice(0, 80) + "…" : fields.prompt}”`);
  for (const [field, label] of Object.entries(SETTING_LABELS)) {
    if (field in fields) {
      const select = form.querySelector(`select[name=${field}]`);
      const shown = select ? select.querySelector(`option[value="${fields[field]}"]`)?.textContent : fields[field];
      words.push(`${label} ${shown}`);
    }
  }
  if ("width" in fields && "height" in fields) words.push(`Size ${fields.width}×${fields.height}`);
  if (answer.model) words.push(`Model ${answer.model}`);
  settingsPart(form, "offer-text").textContent =
    `${name} carries ${answer.source_label} settings: ${words.join(" · ")}. Fill the form from this image?`;
  const notes = settingsPart(form, "offer-notes");
  notes.replaceChildren(...answer.notes.map((note) => Object.assign(document.createElement("li"), { textContent: note })));
  const offer = settingsPart(form, "offer");
  offer.settings = fields;
  offer.hidden = false;
  settingsPart(form, "fill").focus();
}

function fillFromSettings(form) {
  const offer = settingsPart(form, "offer");
  for (const [name, value] of Object.entries(offer.settings || {})) {
    const field = form.elements.namedItem(name);
    if (!field || field instanceof RadioNodeList) continue;
    field.value = value;
    field.dispatchEvent(new Event("input", { bubbles: true }));  // the strength's shown value follows
  }
  offer.hidden = true;
  form.querySelector("details.advanced").open = true;  // so the settings filled in are seen
  form.querySelector("textarea[name=prompt]").focus();
}

// The controls that need this script are hidden without it.
function showScriptedControls(root) {
  root.querySelectorAll?.("#settings-choose, .settings-hint").forEach((element) => { element.hidden = false; });
}
document.addEventListener("DOMContentLoaded", () => showScriptedControls(document));
document.addEventListener("htmx:load", (event) => showScriptedControls(event.detail.elt));

// Choosing another model moves a size left at a model's own square (its option's data-side: 512
// for SD 1.x, 1024 for SDXL) to the new model's; a size the user typed stays.
function followModelSize(form, select) {
  const side = select.selectedOptions[0]?.dataset.side;
  const width = form.elements.namedItem("width");
  const height = form.elements.namedItem("height");
  const sides = [...select.options].map((option) => option.dataset.side);
  if (side && width && height && width.value === height.value && sides.includes(width.value)) {
    width.value = height.value = side;
  }
}

document.addEventListener("change", (event) => {
  const form = event.target.closest("#generate-form");
  if (!form) return;
  if (event.target.name === "mode") applyMode(form);
  if (event.target.name === "model") followModelSize(form, event.target);
  if (event.target.name === "init_image") chooseInitImage(form, event.target);
  if (event.target.id === "settings-file" && event.target.files[0]) {
    readImageSettings(form, event.target.files[0]);
    event.target.value = "";  // the same file again is a new choice
  }
});
document.addEventListener("input", (event) => {
  if (event.target.name !== "strength") return;
  const output = event.target.closest("form").querySelector("#strength-value");
  output.textContent = Number(event.target.value).toFixed(2);
});
document.addEventListener("click", (event) => {
  const form = event.target.closest("#generate-form");
  if (!form) return;
  if (event.target.id === "remove-image") {
    clearInitImage(form);
    showUploadError(form, "");
  }
  if (event.target.id === "settings-choose") settingsPart(form, "file").click();
  if (event.target.id === "settings-fill") fillFromSettings(form);
  if (event.target.id === "settings-dismiss") settingsPart(form, "offer").hidden = true;
});
// The file input covers the drop zone, so a drop lands on it natively; this only highlights.
// Elsewhere on the generate form a dropped PNG is read for its settings.
function settingsDropTarget(event) {
  if (event.target.closest?.(".dropzone")) return null;
  const form = event.target.closest?.("#generate-form");
  return form && !form.querySelector("input[name=mode][value=imported]:checked") ? form : null;
}
["dragenter", "dragover"].forEach((type) => document.addEventListener(type, (event) => {
  event.target.closest?.(".dropzone")?.classList.add("dragging");
  const form = settingsDropTarget(event);
  if (form && event.dataTransfer?.types.includes("Files")) {
    event.preventDefault();  // accept the drop here
    form.classList.add("dragging-settings");
  }
}));
["dragleave", "drop"].forEach((type) => document.addEventListener(type, (event) => {
  event.target.closest?.(".dropzone")?.classList.remove("dragging");
  event.target.closest?.("#generate-form")?.classList.remove("dragging-settings");
}));
document.addEventListener("drop", (event) => {
  const form = settingsDropTarget(event);
  const file = event.dataTransfer?.files[0];
  if (!form || !file) return;
  event.preventDefault();  // the browser would open the image instead
  readImageSettings(form, file);
});

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
