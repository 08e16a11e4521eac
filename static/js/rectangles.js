// The rectangle editor of the Refine Image drawer (refinement/partials/rectangles.html), and the
// subject tab's reference upload.
//
// An editor ([data-rect-editor]) shows the parent image; rectangles are drawn, moved and resized
// on it with the pointer (mouse, pen or touch), or added and edited as numbers in the list under
// it. Its state is kept in the image's own pixels, whatever size the image is shown at, and every
// change rewrites the payload form's hidden input, which is what the form posts:
//   data-mode="many": up to data-max rectangles, each with a prompt, as
//                     [{"bbox": [x, y, w, h], "prompt": "…"}, …] (region-masks);
//   data-mode="one":  one optional box without a prompt, as [x, y, w, h] or "" (subject-bbox);
//   data-mode="text": text repair. The lines OCR finds (GET data-text-url, once the tab is shown)
//                     become boxes with the text that was read, to correct; more boxes can be
//                     drawn around text OCR missed. Only the lines whose text was changed and the
//                     drawn boxes that have text are written, up to data-max of them, as
//                     [{"bbox": [x, y, w, h], "text": "…"}, …] (text-corrections).
// The editor starts from that input's value, so a form that comes back with errors keeps them (in
// text mode, a posted box that is one of the lines OCR finds takes that line's place).
(() => {
  "use strict";

  // A pointer drag shorter than this (screen pixels, either way) is a click, not a rectangle.
  const MIN_DRAG = 4;
  // A box's number sits above it in text mode (inside, it would hide the first letters), or below
  // it when there is no room above (screen pixels).
  const NUMBER_ROOM = 30;
  // A posted box that shares this much of itself or of an OCR line with the line is that line
  // (moved or resized a little, or made looser around it).
  const SAME_LINE = 0.6;
  const SIDES = ["x", "y", "w", "h"];
  const SIDE_NAMES = { x: "x", y: "y", w: "width", h: "height" };
  const CORNERS = ["nw", "ne", "sw", "se"];

  const clamp = (value, low, high) => Math.min(Math.max(value, low), high);
  const capitalised = (word) => word[0].toUpperCase() + word.slice(1);
  const isBox = (bbox) => Array.isArray(bbox) && bbox.length === 4 && bbox.every(Number.isFinite);
  const sameBox = (a, b) => a.x === b.x && a.y === b.y && a.w === b.w && a.h === b.h;

  // How much the smaller of two rectangles lies inside the other: 1 when one holds the other, 0
  // for two apart.
  function overlap(a, b) {
    const w = Math.min(a.x + a.w, b.x + b.w) - Math.max(a.x, b.x);
    const h = Math.min(a.y + a.h, b.y + b.h) - Math.max(a.y, b.y);
    if (w <= 0 || h <= 0) return 0;
    return (w * h) / Math.min(a.w * a.h, b.w * b.h);
  }

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
      this.text = root.dataset.mode === "text";
      this.noun = this.text ? "box" : "rectangle";
      this.width = Number(root.dataset.width);
      this.height = Number(root.dataset.height);
      this.max = this.single ? 1 : Number(root.dataset.max) || 8;
      this.minSide = Number(root.dataset.minSide) || 1;
      this.maxLength = Number(root.dataset.maxLength) || 0;
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

      if (this.text) {
        this.status = root.querySelector("[data-text-status]");
        this.readAgain = root.querySelector("[data-read-text]");
        this.readAgain.addEventListener("click", () => this.readText());
        this.textRead = false;
        this.whenShown(() => this.readText());
      }
    }

    // --- State: rectangles in image pixels, read from and written to the hidden input. ---

    // What a new rectangle carries besides its box. In text mode `original` is what OCR read
    // (null for a box the user drew), so that an unchanged line is not sent.
    blank() {
      return this.text ? { text: "", original: null } : { prompt: "" };
    }

    read() {
      let value = null;
      try {
        value = JSON.parse(this.input.value || "null");
      } catch {
        return [];  // not JSON: the server said so next to the editor; start afresh
      }
      const items = this.single ? (value ? [{ bbox: value }] : []) : (Array.isArray(value) ? value : []);
      return items
        .filter((item) => isBox(item?.bbox))
        .slice(0, this.max)
        .map((item) => {
          const [x, y, w, h] = item.bbox;
          const words = this.text
            ? { text: typeof item.text === "string" ? item.text : "", original: null }
            : { prompt: typeof item.prompt === "string" ? item.prompt : "" };
          return this.fitted({ x, y, w, h, ...words });
        });
    }

    // Text mode: whether a box is posted. An OCR line once its text is changed, a drawn box once
    // it has text (a blank one keeps the form from submitting: see showState).
    sent(rect) {
      const text = rect.text.trim();
      return Boolean(text) && (rect.original === null || text !== rect.original.trim());
    }

    write() {
      const bbox = (rect) => [rect.x, rect.y, rect.w, rect.h];
      let value;
      if (this.single) value = this.rects.length ? bbox(this.rects[0]) : null;
      else if (this.text) value = this.rects.filter((rect) => this.sent(rect)).map((rect) => ({ bbox: bbox(rect), text: rect.text.trim() }));
      else value = this.rects.map((rect) => ({ bbox: bbox(rect), prompt: rect.prompt }));
      this.input.value = value && value.length ? JSON.stringify(value) : "";
    }

    // Whole pixels, inside the image, at least data-min-side (1) each way. An x or y pushed too
    // far shrinks the width or height (so typing x then width works), rather than moving the
    // rectangle back.
    fitted(rect) {
      const min = this.minSide;
      const x = clamp(Math.round(rect.x) || 0, 0, this.width - min);
      const y = clamp(Math.round(rect.y) || 0, 0, this.height - min);
      const w = clamp(Math.round(rect.w) || min, min, this.width - x);
      const h = clamp(Math.round(rect.h) || min, min, this.height - y);
      return { ...rect, x, y, w, h };
    }

    // What counts against data-max: every rectangle; in text mode only what will be sent, and the
    // drawn boxes still waiting for their text (unchanged lines cost nothing).
    get used() {
      return this.text ? this.rects.filter((rect) => rect.original === null || this.sent(rect)).length : this.rects.length;
    }

    get full() {
      return !this.single && this.used >= this.max;
    }

    limitNote() {
      if (!this.text) return `At most ${this.max} rectangles: delete one to draw another.`;
      if (this.used > this.max) {
        return `${this.used} corrections: at most ${this.max} can be sent at once; undo some changes or delete some boxes.`;
      }
      return `At most ${this.max} corrections at once: undo a change or delete a box to draw another.`;
    }

    // --- Rendering: boxes on the image (for the eye) and rows in the list (for everyone). ---

    render() {
      const focus = this.focusedField();
      this.layer.replaceChildren(...this.rects.map((rect, index) => this.box(index)));
      this.list.replaceChildren(...this.rects.map((rect, index) => this.row(index)));
      this.rects.forEach((rect, index) => {
        this.place(index);
        if (this.text) this.showState(index);
      });
      this.showLimits();
      if (focus) this.refocus(focus);
    }

    showLimits() {
      this.addButton.hidden = this.single && this.rects.length > 0;
      this.addButton.disabled = this.full;
      if (this.clearButton) this.clearButton.hidden = !this.rects.length;
      this.surface.classList.toggle("full", this.full);
      const note = this.full ? this.limitNote() : this.hint;
      if (this.note.textContent !== note) this.note.textContent = note;  // the note is live: say it once
    }

    box(index) {
      const box = element("div", { className: "rect-box", "data-index": index });
      if (!this.single) box.append(element("span", { className: "rect-number" }, String(index + 1)));
      for (const corner of CORNERS) box.append(element("span", { className: `rect-handle ${corner}`, "data-corner": corner }));
      return box;
    }

    row(index) {
      const number = index + 1;
      const name = this.single ? "Box" : `${capitalised(this.noun)} ${number}`;
      const row = element("li", { className: "rect-row", "data-index": index });
      if (!this.single) {
        row.append(element("span", { className: "rect-number", "aria-hidden": "true" }, String(number)));
      }
      const fields = element("div", { className: "rect-fields" });
      if (this.text) {
        fields.append(...this.textFields(index));
      } else if (!this.single) {
        const prompt = element("input", { type: "text", "data-words": "", autocomplete: "off", placeholder: "What should it become?" });
        prompt.value = this.rects[index].prompt;
        fields.append(element("label", { className: "rect-prompt" }, element("span", {}, "Prompt", hiddenText(` for rectangle ${number}`)), prompt));
      }
      const numbers = element("div", { className: "rect-numbers" });
      for (const side of SIDES) {
        const horizontal = side === "x" || side === "w";
        const size = horizontal ? this.width : this.height;
        const position = side === "x" || side === "y";
        const input = element("input", {
          type: "number", inputmode: "numeric", step: 1, "data-side": side,
          min: position ? 0 : this.minSide, max: position ? size - this.minSide : size,
        });
        numbers.append(element("label", {}, element("span", {}, hiddenText(`${name} `), SIDE_NAMES[side]), input));
      }
      fields.append(numbers);
      row.append(fields);
      if (!this.single) {
        row.append(element("button", { type: "button", className: "icon-button rect-delete", "data-delete-rect": "", "aria-label": `Delete ${this.noun} ${number}` }, "✕"));
      }
      return row;
    }

    // Text mode: the text to write in box `index` (prefilled with what OCR read), and whether it
    // will be sent (filled in by showState).
    textFields(index) {
      const number = index + 1;
      const stateId = `${this.input.id}-state-${number}`;
      const input = element("input", {
        type: "text", "data-words": "", autocomplete: "off", spellcheck: "true",
        placeholder: "What should it say?", "aria-describedby": stateId,
      });
      if (this.maxLength) input.maxLength = this.maxLength;
      input.value = this.rects[index].text;
      const label = element("label", { className: "rect-text" }, element("span", {}, "Text", hiddenText(` for box ${number}`)), input);
      return [label, element("p", { className: "rect-state", id: stateId, "data-state": "" })];
    }

    // Text mode: whether box `index` will be sent, on the image and in its row. A blank text
    // keeps the form from submitting (the browser says why), rather than quietly sending less.
    showState(index) {
      const rect = this.rects[index];
      const sent = this.sent(rect);
      const box = this.layer.children[index];
      const row = this.list.children[index];
      box.classList.toggle("sent", sent);
      row.classList.toggle("sent", sent);
      const text = rect.text.trim();
      const read = rect.original === null ? null : `OCR read “${rect.original}”`;
      let state;
      if (!text) state = read ? `${read}: type what it should say, or delete the box.` : "Drawn box: type what it should say.";
      else if (rect.original === null) state = "Drawn box: its text will be written.";
      else if (sent) state = `${read}: will be rewritten.`;
      else {
        const sure = Number.isFinite(rect.confidence) ? ` (${Math.round(rect.confidence)}% sure)` : "";
        state = `As OCR read it${sure}: unchanged, so left as it is.`;
      }
      row.querySelector("[data-state]").textContent = state;
      row.querySelector("[data-words]").setCustomValidity(text ? "" : `Type what box ${index + 1} should say, or delete it.`);
    }

    // Moves box `index` to its rectangle and shows its numbers, except in the field being typed in.
    place(index) {
      const rect = this.rects[index];
      const box = this.layer.children[index];
      box.style.left = `${(rect.x / this.width) * 100}%`;
      box.style.top = `${(rect.y / this.height) * 100}%`;
      box.style.width = `${(rect.w / this.width) * 100}%`;
      box.style.height = `${(rect.h / this.height) * 100}%`;
      if (this.text) {
        // Shown size unknown while the tab is hidden: about the drawer's usual.
        const shownHeight = this.surface.clientHeight || 300;
        box.classList.toggle("number-below", (rect.y / this.height) * shownHeight < NUMBER_ROOM);
      }
      for (const input of this.list.children[index].querySelectorAll("[data-side]")) {
        if (input !== document.activeElement) input.value = rect[input.dataset.side];
      }
    }

    // Where focus is in the list (which rectangle, which field), so a re-render can put it back.
    focusedField() {
      const active = document.activeElement;
      const row = active && this.list.contains(active) ? active.closest("[data-index]") : null;
      if (!row) return null;
      let field = "[data-delete-rect]";
      if (active.dataset.side) field = `[data-side="${active.dataset.side}"]`;
      else if (active.matches("[data-words]")) field = "[data-words]";
      return { rect: this.rects[Number(row.dataset.index)], field, selection: [active.selectionStart, active.selectionEnd] };
    }

    refocus({ rect, field, selection }) {
      const index = this.rects.indexOf(rect);
      const input = index >= 0 ? this.list.children[index].querySelector(field) : null;
      if (!input) return;
      input.focus();
      if (input.type === "text" && selection[0] !== null) input.setSelectionRange(...selection);
    }

    // --- The list: prompts (or texts), numbers, add and delete. ---

    edited(event, committed) {
      const row = event.target.closest("[data-index]");
      if (!row) return;
      const index = Number(row.dataset.index);
      if (event.target.matches("[data-words]")) {
        if (this.text) {
          this.rects[index].text = event.target.value;
          this.showState(index);
          this.showLimits();
        } else {
          this.rects[index].prompt = event.target.value;
        }
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
      // In the middle: a quarter of the image, or in text mode a box the shape of a line.
      const w = Math.max(1, Math.round(this.width / 2));
      const h = Math.max(1, Math.round(this.height / (this.text ? 8 : 2)));
      this.rects.push(this.fitted({ x: (this.width - w) / 2, y: (this.height - h) / 2, w, h, ...this.blank() }));
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

    // --- Text mode: the lines OCR finds, asked for once the tab is shown. ---

    whenShown(callback) {
      const hidden = this.root.closest("[hidden]");
      if (!hidden) return callback();
      const observer = new MutationObserver(() => {
        if (this.root.closest("[hidden]")) return;
        observer.disconnect();
        callback();
      });
      observer.observe(hidden, { attributes: true, attributeFilter: ["hidden"] });
    }

    say(message) {
      this.status.textContent = message;
    }

    async readText() {
      if (this.reading || this.textRead) return;
      this.reading = true;
      // Asked again from its button: focus goes on from it, not to the page, once it is hidden.
      const again = document.activeElement === this.readAgain;
      this.readAgain.hidden = true;
      this.root.classList.add("reading");
      this.say("Reading the text…");
      let lines = null, problem = "";
      try {
        const response = await fetch(this.root.dataset.textUrl, { credentials: "same-origin", headers: { Accept: "application/json" } });
        const answer = await response.json().catch(() => ({}));
        if (response.ok && Array.isArray(answer.lines)) lines = answer.lines;
        else problem = (answer.error || `the server answered ${response.status}`).replace(/\.$/, "");
      } catch {
        problem = "check the connection";
      } finally {
        this.reading = false;
        this.root.classList.remove("reading");
      }
      if (lines === null) {
        this.say(`The text could not be read (${problem}). You can still draw a box around text, or press Add box.`);
        this.readAgain.hidden = false;
        if (again) this.readAgain.focus();
        return;
      }
      this.textRead = true;
      const found = this.merge(lines);
      this.say(found
        ? `Found ${found} ${found === 1 ? "line" : "lines"} of text: correct what is wrong; unchanged lines are left as they are.`
        : "No text found: draw a box around the text to correct, or press Add box.");
      if (again) (this.list.querySelector("[data-words]") || this.addButton).focus();
    }

    // The lines become boxes, top to bottom. A box already here (posted before an error, or drawn
    // while OCR read) that is one of the lines, the same box or mostly the same, takes that line's
    // place and keeps its box and text. Returns how many lines were found.
    merge(lines) {
      const found = lines
        .filter((line) => isBox(line?.bbox) && typeof line.text === "string")
        .map((line) => {
          const [x, y, w, h] = line.bbox;
          return this.fitted({ x, y, w, h, text: line.text, original: line.text, confidence: line.confidence });
        });
      const slots = [...found];
      const free = (index) => slots[index] === found[index];
      const take = (index, rect) => {
        const line = found[index];
        slots[index] = Object.assign(rect, { original: line.original, confidence: line.confidence });
        if (!rect.text.trim()) rect.text = line.text;
      };
      const others = [];
      for (const rect of this.rects) {
        const same = found.findIndex((line, index) => free(index) && sameBox(line, rect));
        if (same >= 0) take(same, rect);
        else others.push(rect);
      }
      const drawn = [];
      for (const rect of others) {
        let best = -1, most = SAME_LINE;
        found.forEach((line, index) => {
          const shared = overlap(line, rect);
          if (free(index) && shared >= most) [best, most] = [index, shared];
        });
        if (best >= 0) take(best, rect);
        else drawn.push(rect);
      }
      this.rects = [...slots, ...drawn];
      this.changed();
      return found.length;
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
          this.note.textContent = this.limitNote();
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
          this.rects.push({ x: 0, y: 0, w: 1, h: 1, ...this.blank() });
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
      // With a mouse, the new rectangle's prompt (or text) is ready for typing (a touch would pop a
      // keyboard up).
      if (!this.single && drag.pointerType !== "touch") this.list.children[drag.index]?.querySelector("[data-words]")?.focus();
    }

    // After a submission came back with an error about the rectangles, focus goes to them.
    focusError() {
      if (!this.root.querySelector(".rect-errors")) return;
      if (document.activeElement && document.activeElement !== document.body && document.contains(document.activeElement)) return;
      const blank = [...this.list.querySelectorAll("[data-words]")].find((input) => !input.value.trim());
      (blank || this.list.querySelector("input") || this.addButton).focus();
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
