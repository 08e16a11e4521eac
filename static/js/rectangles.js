// The rectangle editor of the Refine Image drawer (refinement/partials/rectangles.html), and the
// subject tab's reference upload.
//
// An editor ([data-rect-editor]) shows the parent image; rectangles are drawn, moved and resized
// on it with the pointer (mouse, pen or touch), or added and edited as numbers in the list under
// it. Its state is kept in the image's own pixels, whatever size the image is shown at, and every
// change rewrites the payload form's hidden input, which is what the form posts:
//   data-mode="many": up to data-max rectangles, each with a prompt, as
//                     [{"bbox": [x, y, w, h], "prompt": "…"}, …] (region-masks);
//   data-mode="one":  one optional box without a prompt, as [x, y, w, h] or "" (subject-bbox).
// The editor starts from that input's value, so a form that comes back with errors keeps them.
(() => {
  "use strict";

  // A pointer drag shorter than this (screen pixels, either way) is a click, not a rectangle.
  const MIN_DRAG = 4;
  const SIDES = ["x", "y", "w", "h"];
  const SIDE_NAMES = { x: "x", y: "y", w: "width", h: "height" };
  const CORNERS = ["nw", "ne", "sw", "se"];

  const clamp = (value, low, high) => Math.min(Math.max(value, low), high);

  function element(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (name === "className") node.className = value;
      else node.setAttribute(name, value);
    }
    node.append(...children);
    return node;
  }

  function hiddenText(text) {
    return element("span", { className: "visually-hidden" }, text);
  }

  class RectangleEditor {
    constructor(root) {
      this.root = root;
      this.single = root.dataset.mode === "one";
      this.width = Number(root.dataset.width);
      this.height = Number(root.dataset.height);
      this.max = this.single ? 1 : Number(root.dataset.max) || 8;
      this.input = root.querySelector(`input[name="${root.dataset.field}"]`);
      this.surface = root.querySelector("[data-rect-surface]");
      this.layer = root.querySelector("[data-rect-layer]");
      this.list = root.querySelector(".rect-list");
      this.note = root.querySelector("[data-rect-note]");
      this.hint = this.note.textContent;
      this.addButton = root.querySelector("[data-add-rect]");
      this.clearButton = root.querySelector("[data-clear-rect]");
      this.drag = null;
      this.rects = this.read();

      this.surface.addEventListener("pointerdown", (event) => this.pointerDown(event));
      this.surface.addEventListener("pointermove", (event) => this.pointerMove(event));
      this.surface.addEventListener("pointerup", (event) => this.pointerUp(event, false));
      this.surface.addEventListener("pointercancel", (event) => this.pointerUp(event, true));
      this.list.addEventListener("input", (event) => this.edited(event, false));
      this.list.addEventListener("change", (event) => this.edited(event, true));
      this.list.addEventListener("click", (event) => {
        const remove = event.target.closest("[data-delete-rect]");
        if (remove) this.remove(Number(remove.closest("[data-index]").dataset.index));
      });
      this.addButton.addEventListener("click", () => this.add());
      this.clearButton?.addEventListener("click", () => this.remove(0));

      this.render();
      this.write();
    }

    // --- State: rectangles in image pixels, read from and written to the hidden input. ---

    read() {
      let value = null;
      try {
        value = JSON.parse(this.input.value || "null");
      } catch {
        return [];  // not JSON: the server said so next to the editor; start afresh
      }
      const items = this.single ? (value ? [{ bbox: value }] : []) : (Array.isArray(value) ? value : []);
      return items
        .filter((item) => Array.isArray(item?.bbox) && item.bbox.length === 4 && item.bbox.every(Number.isFinite))
        .slice(0, this.max)
        .map((item) => {
          const [x, y, w, h] = item.bbox;
          return this.fitted({ x, y, w, h, prompt: typeof item.prompt === "string" ? item.prompt : "" });
        });
    }

    write() {
      const boxes = this.rects.map((rect) => [rect.x, rect.y, rect.w, rect.h]);
      if (this.single) this.input.value = boxes.length ? JSON.stringify(boxes[0]) : "";
      else this.input.value = boxes.length ? JSON.stringify(this.rects.map((rect, index) => ({ bbox: boxes[index], prompt: rect.prompt }))) : "";
    }

    // Whole pixels, inside the image, at least 1×1. An x or y pushed too far shrinks the width or
    // height (so typing x then width works), rather than moving the rectangle back.
    fitted(rect) {
      const x = clamp(Math.round(rect.x) || 0, 0, this.width - 1);
      const y = clamp(Math.round(rect.y) || 0, 0, this.height - 1);
      const w = clamp(Math.round(rect.w) || 1, 1, this.width - x);
      const h = clamp(Math.round(rect.h) || 1, 1, this.height - y);
      return { ...rect, x, y, w, h };
    }

    get full() {
      return !this.single && this.rects.length >= this.max;
    }

    // --- Rendering: boxes on the image (for the eye) and rows in the list (for everyone). ---

    render() {
      this.layer.replaceChildren(...this.rects.map((rect, index) => this.box(index)));
      this.list.replaceChildren(...this.rects.map((rect, index) => this.row(index)));
      this.rects.forEach((rect, index) => this.place(index));
      this.addButton.hidden = this.single && this.rects.length > 0;
      this.addButton.disabled = this.full;
      if (this.clearButton) this.clearButton.hidden = !this.rects.length;
      this.surface.classList.toggle("full", this.full);
      this.note.textContent = this.full
        ? `At most ${this.max} rectangles: delete one to draw another.`
        : this.hint;
    }

    box(index) {
      const box = element("div", { className: "rect-box", "data-index": index });
      if (!this.single) box.append(element("span", { className: "rect-number" }, String(index + 1)));
      for (const corner of CORNERS) box.append(element("span", { className: `rect-handle ${corner}`, "data-corner": corner }));
      return box;
    }

    row(index) {
      const name = this.single ? "Box" : `Rectangle ${index + 1}`;
      const row = element("li", { className: "rect-row", "data-index": index });
      if (!this.single) {
        row.append(element("span", { className: "rect-number", "aria-hidden": "true" }, String(index + 1)));
      }
      const fields = element("div", { className: "rect-fields" });
      if (!this.single) {
        const prompt = element("input", { type: "text", "data-prompt": "", autocomplete: "off", placeholder: "What should it become?" });
        prompt.value = this.rects[index].prompt;
        fields.append(element("label", { className: "rect-prompt" }, element("span", {}, "Prompt", hiddenText(` for rectangle ${index + 1}`)), prompt));
      }
      const numbers = element("div", { className: "rect-numbers" });
      for (const side of SIDES) {
        const horizontal = side === "x" || side === "w";
        const size = horizontal ? this.width : this.height;
        const input = element("input", {
          type: "number", inputmode: "numeric", step: 1, "data-side": side,
          min: side === "x" || side === "y" ? 0 : 1, max: side === "x" || side === "y" ? size - 1 : size,
        });
        numbers.append(element("label", {}, element("span", {}, hiddenText(`${name} `), SIDE_NAMES[side]), input));
      }
      fields.append(numbers);
      row.append(fields);
      if (!this.single) {
        row.append(element("button", { type: "button", className: "icon-button rect-delete", "data-delete-rect": "", "aria-label": `Delete rectangle ${index + 1}` }, "✕"));
      }
      return row;
    }

    // Moves box `index` to its rectangle and shows its numbers, except in the field being typed in.
    place(index) {
      const rect = this.rects[index];
      const box = this.layer.children[index];
      box.style.left = `${(rect.x / this.width) * 100}%`;
      box.style.top = `${(rect.y / this.height) * 100}%`;
      box.style.width = `${(rect.w / this.width) * 100}%`;
      box.style.height = `${(rect.h / this.height) * 100}%`;
      for (const input of this.list.children[index].querySelectorAll("[data-side]")) {
        if (input !== document.activeElement) input.value = rect[input.dataset.side];
      }
    }

    // --- The list: prompts, numbers, add and delete. ---

    edited(event, committed) {
      const row = event.target.closest("[data-index]");
      if (!row) return;
      const index = Number(row.dataset.index);
      if (event.target.matches("[data-prompt]")) {
        this.rects[index].prompt = event.target.value;
      } else if (event.target.matches("[data-side]")) {
        const value = event.target.valueAsNumber;
        if (Number.isFinite(value)) this.rects[index] = this.fitted({ ...this.rects[index], [event.target.dataset.side]: value });
        this.place(index);
        // Once the field is left (or Enter pressed), it shows what was kept: whole and inside.
        if (committed) event.target.value = this.rects[index][event.target.dataset.side];
      }
      this.write();
    }

    add() {
      if (this.full || (this.single && this.rects.length)) return;
      // A quarter of the image, in its middle.
      const w = Math.max(1, Math.round(this.width / 2)), h = Math.max(1, Math.round(this.height / 2));
      this.rects.push(this.fitted({ x: (this.width - w) / 2, y: (this.height - h) / 2, w, h, prompt: "" }));
      this.changed();
      this.focusRow(this.rects.length - 1);
    }

    remove(index) {
      this.rects.splice(index, 1);
      this.changed();
      // Focus stays in the list: on the next row's delete button, the previous one's, or Add.
      const rows = this.list.children;
      const next = rows[Math.min(index, rows.length - 1)];
      (next?.querySelector("[data-delete-rect]") || this.addButton).focus();
    }

    changed() {
      this.render();
      this.write();
    }

    focusRow(index) {
      this.list.children[index]?.querySelector("input")?.focus();
    }

    // --- The pointer: draw on the image, drag a box to move it, drag a corner to resize it. ---

    // Where the pointer is, in image pixels (not rounded or clamped yet).
    imagePoint(event) {
      const shown = this.surface.getBoundingClientRect();
      return {
        x: ((event.clientX - shown.left) * this.width) / shown.width,
        y: ((event.clientY - shown.top) * this.height) / shown.height,
      };
    }

    // The rectangle between two points in image pixels, clamped inside the image.
    spanning(a, b) {
      const left = clamp(Math.round(Math.min(a.x, b.x)), 0, this.width);
      const right = clamp(Math.round(Math.max(a.x, b.x)), 0, this.width);
      const top = clamp(Math.round(Math.min(a.y, b.y)), 0, this.height);
      const bottom = clamp(Math.round(Math.max(a.y, b.y)), 0, this.height);
      return { x: left, y: top, w: right - left, h: bottom - top };
    }

    pointerDown(event) {
      if (event.button !== 0 || this.drag) return;
      const point = this.imagePoint(event);
      const handle = event.target.closest("[data-corner]");
      const box = event.target.closest(".rect-box");
      if (handle) {
        const index = Number(box.dataset.index), rect = this.rects[index], corner = handle.dataset.corner;
        // The opposite corner stays where it is.
        const anchor = { x: corner.includes("w") ? rect.x + rect.w : rect.x, y: corner.includes("n") ? rect.y + rect.h : rect.y };
        this.drag = { kind: "resize", index, anchor };
      } else if (box) {
        const index = Number(box.dataset.index);
        this.drag = { kind: "move", index, start: point, origin: { ...this.rects[index] } };
      } else {
        if (this.full) {
          this.note.textContent = `At most ${this.max} rectangles: delete one to draw another.`;
          return;
        }
        this.drag = { kind: "draw", index: null, start: point, client: { x: event.clientX, y: event.clientY } };
      }
      this.drag.pointerId = event.pointerId;
      this.drag.pointerType = event.pointerType;
      event.preventDefault();  // no text selection, no native image drag
      this.surface.setPointerCapture(event.pointerId);
    }

    pointerMove(event) {
      const drag = this.drag;
      if (!drag || event.pointerId !== drag.pointerId) return;
      const point = this.imagePoint(event);
      if (drag.kind === "draw") {
        if (drag.index === null) {
          // A rectangle appears once the pointer has really moved.
          const far = Math.abs(event.clientX - drag.client.x) >= MIN_DRAG || Math.abs(event.clientY - drag.client.y) >= MIN_DRAG;
          if (!far) return;
          drag.before = [...this.rects];
          if (this.single) this.rects = [];  // one box: drawing again replaces it
          this.rects.push({ x: 0, y: 0, w: 1, h: 1, prompt: "" });
          drag.index = this.rects.length - 1;
          this.render();
        }
        this.rects[drag.index] = this.fitted({ ...this.rects[drag.index], ...this.spanning(drag.start, point) });
      } else if (drag.kind === "move") {
        const { origin } = drag;
        const x = clamp(Math.round(origin.x + point.x - drag.start.x), 0, this.width - origin.w);
        const y = clamp(Math.round(origin.y + point.y - drag.start.y), 0, this.height - origin.h);
        this.rects[drag.index] = { ...origin, x, y };
      } else {
        this.rects[drag.index] = this.fitted({ ...this.rects[drag.index], ...this.spanning(drag.anchor, point) });
      }
      this.place(drag.index);
      this.write();
    }

    pointerUp(event, cancelled) {
      const drag = this.drag;
      if (!drag || event.pointerId !== drag.pointerId) return;
      this.drag = null;
      if (drag.kind !== "draw" || drag.index === null) return;
      // A drag too thin to mean anything (or one the browser took over) draws nothing.
      const shown = this.surface.getBoundingClientRect();
      const rect = this.rects[drag.index];
      const tiny = (rect.w * shown.width) / this.width < MIN_DRAG || (rect.h * shown.height) / this.height < MIN_DRAG;
      if (cancelled || tiny) {
        this.rects = drag.before;
        this.changed();
        return;
      }
      this.changed();
      // With a mouse, the new rectangle's prompt is ready for typing (a touch would pop a keyboard up).
      if (!this.single && drag.pointerType !== "touch") this.list.children[drag.index]?.querySelector("[data-prompt]")?.focus();
    }

    // After a submission came back with an error about the rectangles, focus goes to them.
    focusError() {
      if (!this.root.querySelector(".rect-errors")) return;
      if (document.activeElement && document.activeElement !== document.body && document.contains(document.activeElement)) return;
      const emptyPrompt = [...this.list.querySelectorAll("[data-prompt]")].find((input) => !input.value.trim());
      (emptyPrompt || this.list.querySelector("input") || this.addButton).focus();
    }
  }

  // Each editor is set up once, when it appears: at page load or when htmx swaps it in.
  const editors = new WeakMap();

  function setUp(container) {
    if (!container?.querySelectorAll) return;
    const roots = [...container.querySelectorAll("[data-rect-editor]")];
    if (container.matches("[data-rect-editor]")) roots.unshift(container);
    for (const root of roots) {
      if (editors.has(root)) continue;
      const editor = new RectangleEditor(root);
      editors.set(root, editor);
      if (!root.closest("[hidden]")) editor.focusError();
    }
  }

  document.addEventListener("htmx:load", (event) => setUp(event.detail.elt));
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", () => setUp(document.body));
  else setUp(document.body);

  // --- The reference image of the subject tab: uploaded as soon as it is chosen (or dropped). ---
  // The upload answers with the new image's id, which the hidden referenceFileId input carries.

  function csrfToken() {
    try {
      return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || "";
    } catch {
      return "";
    }
  }

  function referenceParts(upload) {
    return {
      file: upload.querySelector("[data-reference-file]"),
      id: upload.querySelector("input[type=hidden]"),
      preview: upload.querySelector(".reference-preview"),
      hint: upload.querySelector(".dropzone-hint"),
      remove: upload.querySelector("[data-remove-reference]"),
      status: upload.querySelector("[data-upload-status]"),
      error: upload.querySelector("[data-upload-error]"),
    };
  }

  function showReference(upload, fileId, url) {
    const parts = referenceParts(upload);
    parts.id.value = fileId;
    if (url) parts.preview.src = url;
    else parts.preview.removeAttribute("src");
    parts.preview.hidden = !url;
    parts.hint.hidden = Boolean(url);
    parts.remove.hidden = !fileId;
  }

  function showReferenceError(upload, message) {
    const { error } = referenceParts(upload);
    error.textContent = message;
    error.hidden = !message;
  }

  async function uploadReference(upload, input) {
    const file = input.files[0];
    const { status } = referenceParts(upload);
    showReferenceError(upload, "");
    if (!file) return;
    input.value = "";  // the file goes to the server now; the form posts only its id
    const problem = imageFileProblem(file, Number(upload.dataset.maxUploadBytes));  // static/js/app.js
    if (problem) return showReferenceError(upload, problem);
    const body = new FormData();
    body.append("image", file);
    status.textContent = `Uploading ${file.name}…`;
    // Refining before the id is back would quietly go without the reference.
    const submit = upload.closest("form")?.querySelector("button[type=submit]");
    if (submit) submit.disabled = true;
    try {
      const response = await fetch(upload.dataset.uploadUrl, {
        method: "POST",
        body,
        headers: { "X-CSRFToken": csrfToken() },
        credentials: "same-origin",
      });
      const answer = await response.json().catch(() => ({}));
      if (response.status === 201) {
        showReference(upload, answer.file_id, answer.url);
        status.textContent = `${file.name} uploaded.`;
      } else {
        status.textContent = "";
        // The API names the field ("image: Not a PNG…"); the tab names the file instead.
        const message = (answer.error || "").replace(`${answer.field}: `, "");
        showReferenceError(upload, message ? `${file.name}: ${message}` : `The upload failed (${response.status}); try again.`);
      }
    } catch {
      status.textContent = "";
      showReferenceError(upload, "The upload failed: check the connection and try again.");
    } finally {
      if (submit) submit.disabled = false;
    }
  }

  document.addEventListener("change", (event) => {
    if (!event.target.matches?.("[data-reference-file]")) return;
    uploadReference(event.target.closest("[data-reference-upload]"), event.target);
  });
  document.addEventListener("click", (event) => {
    const remove = event.target.closest?.("[data-remove-reference]");
    if (!remove) return;
    const upload = remove.closest("[data-reference-upload]");
    showReference(upload, "", "");
    showReferenceError(upload, "");
    referenceParts(upload).status.textContent = "Reference removed.";
    referenceParts(upload).file.focus();
  });
})();
