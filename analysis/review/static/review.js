// The review app's page: the release's images as a table, and an image view where the automatic
// masks are accepted, rejected or edited with a brush, masks are added with SAM's decoder on the
// server, and the corrections are saved per image. Vanilla JS, no build step, nothing fetched
// from anywhere but the app's own server (the HTTP API of analysis/review/server.py).
"use strict";

(() => {
  // ---------------------------------------------------------------- COCO RLE
  // Masks are HxW, held here as row-major Uint8Array bitmaps (1 inside). COCO's RLE counts
  // alternate runs of 0 and 1 in column-major order, starting with a (possibly empty) run of 0.

  /** The counts of a compressed RLE string (pycocotools' rleToString: LEB128-like, 5 bits per
   * character, each count after the second stored as the difference to the count two before). */
  function decodeCounts(text) {
    const counts = [];
    let p = 0;
    while (p < text.length) {
      let value = 0;
      let scale = 1;
      let more = true;
      while (more) {
        const c = text.charCodeAt(p) - 48;
        value += (c & 0x1f) * scale;
        scale *= 32;
        more = (c & 0x20) !== 0;
        p += 1;
        if (!more && (c & 0x10) !== 0) value -= scale; // sign-extend
      }
      if (counts.length > 2) value += counts[counts.length - 2];
      counts.push(value);
    }
    return counts;
  }

  /** A bitmap and its bounding box {x0, y0, x1, y1} (inclusive; null when empty) from COCO RLE
   * {size: [h, w], counts: string | number[]}. */
  function rleToBitmap(rle) {
    const [height, width] = rle.size;
    const counts = typeof rle.counts === "string" ? decodeCounts(rle.counts) : rle.counts;
    const bitmap = new Uint8Array(height * width);
    let box = null;
    let index = 0;
    for (let k = 0; k < counts.length; k += 1) {
      const end = index + counts[k];
      if (k % 2 === 1 && end > index) {
        const firstCol = Math.floor(index / height);
        const lastCol = Math.floor((end - 1) / height);
        // a run over two or more columns reaches both the bottom and the top row
        const top = lastCol > firstCol ? 0 : index - firstCol * height;
        const bottom = lastCol > firstCol ? height - 1 : end - 1 - lastCol * height;
        box = growBox(growBox(box, firstCol, top), lastCol, bottom);
        let col = firstCol;
        let row = index - firstCol * height;
        for (let i = index; i < end; i += 1) {
          bitmap[row * width + col] = 1;
          row += 1;
          if (row === height) {
            row = 0;
            col += 1;
          }
        }
      }
      index = end;
    }
    return { bitmap, box };
  }

  function growBox(box, x, y) {
    if (box === null) return { x0: x, y0: y, x1: x, y1: y };
    return { x0: Math.min(box.x0, x), y0: Math.min(box.y0, y), x1: Math.max(box.x1, x), y1: Math.max(box.y1, y) };
  }

  /** Uncompressed COCO counts (column-major, starting with the run of 0) of an HxW bitmap. */
  function bitmapToCounts(bitmap, height, width) {
    const counts = [];
    let current = 0;
    let run = 0;
    for (let x = 0; x < width; x += 1) {
      for (let i = x; i < bitmap.length; i += width) {
        if (bitmap[i] !== current) {
          counts.push(run);
          run = 0;
          current = bitmap[i];
        }
        run += 1;
      }
    }
    counts.push(run);
    return counts;
  }

  // ---------------------------------------------------------------- server
  class ApiError extends Error {
    constructor(status, body) {
      super(body && body.error ? body.error : `HTTP ${status}`);
      this.status = status;
      this.body = body;
    }
  }

  async function api(method, path, body) {
    const init = { method, headers: {} };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    const data = await response.json().catch(() => null);
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  function loadPhoto(url) {
    return new Promise((resolve, reject) => {
      const photo = new Image();
      photo.onload = () => resolve(photo);
      photo.onerror = () => reject(new Error(`cannot load ${url}`));
      photo.src = url;
    });
  }

  // ---------------------------------------------------------------- page state
  const $ = (selector) => document.querySelector(selector);
  const canvas = $("#canvas");
  const context = canvas.getContext("2d");
  const PALETTE = [
    [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189], [140, 86, 75],
    [227, 119, 194], [188, 189, 34], [23, 190, 207], [174, 199, 232], [255, 187, 120], [152, 223, 138],
    [255, 152, 150], [197, 176, 213], [196, 156, 148], [247, 182, 210], [219, 219, 141], [158, 218, 229],
  ];
  const CANDIDATE_COLOR = [255, 235, 59];

  const list = { images: [], sortKey: "image_id", sortDir: 1, release: "", model: "" };
  /** The image being reviewed; null in the list view. */
  let view = null;
  let openToken = 0;
  const timings = [];
  const decodeSeconds = [];
  const opens = [];
  let lastDrawn = null;

  function setStatus(text, isError = false) {
    const line = $("#status-line");
    line.textContent = text;
    line.classList.toggle("error", isError);
  }

  function fail(error) {
    setStatus(`error: ${error.message}`, true);
  }

  // ---------------------------------------------------------------- list view
  const FILTER_INPUTS = () => Array.from(document.querySelectorAll("#filters input"));

  async function showList() {
    view = null;
    openToken += 1;
    $("#image-view").hidden = true;
    $("#list-view").hidden = false;
    const data = await api("GET", "/api/images");
    list.images = data.images.map((image) => ({ ...image, pixels: image.width * image.height }));
    list.release = data.release;
    list.model = data.model;
    $("#release").textContent = `${data.release} · ${data.model}`;
    renderTable();
    setStatus(`${list.images.length} images`);
  }

  function passesFilters(image) {
    return FILTER_INPUTS().every((input) => {
      if (input.value === "") return true;
      const bound = Number(input.value);
      const value = image[input.dataset.filter];
      if (value === null || value === undefined) return false;
      return input.dataset.bound === "min" ? value >= bound : value <= bound;
    });
  }

  function renderTable() {
    const { sortKey, sortDir } = list;
    const rows = list.images.filter(passesFilters).sort((a, b) => {
      const x = a[sortKey];
      const y = b[sortKey];
      if (x === y) return a.image_id - b.image_id;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * sortDir;
    });
    for (const th of document.querySelectorAll("#image-table th")) {
      if (th.dataset.key === sortKey) th.dataset.sort = sortDir > 0 ? "asc" : "desc";
      else delete th.dataset.sort;
    }
    const fixed = (value, digits) => (value === null || value === undefined ? "–" : value.toFixed(digits));
    const body = $("#image-table tbody");
    body.replaceChildren(
      ...rows.map((image) => {
        const tr = document.createElement("tr");
        tr.dataset.imageId = image.image_id;
        const cells = [
          image.image_id,
          image.file_name,
          `${image.width}×${image.height}`,
          image.n_masks,
          fixed(image.mean_predicted_iou, 3),
          fixed(image.min_predicted_iou, 3),
          fixed(image.mean_stability, 3),
          fixed(image.median_area, 0),
          image.version,
        ];
        for (const cell of cells) tr.insertCell().textContent = cell;
        return tr;
      }),
    );
  }

  $("#image-table thead").addEventListener("click", (event) => {
    const key = event.target.closest("th")?.dataset.key;
    if (!key) return;
    list.sortDir = list.sortKey === key ? -list.sortDir : 1;
    list.sortKey = key;
    renderTable();
  });
  $("#image-table tbody").addEventListener("click", (event) => {
    const row = event.target.closest("tr[data-image-id]");
    if (row) location.hash = `#image/${row.dataset.imageId}`;
  });
  $("#filters").addEventListener("input", renderTable);

  // ---------------------------------------------------------------- masks
  // A mask of the view: {id (string, the DOM's data-mask-id), sourceId (automatic annotation id
  // or null), status, present (false: an added mask removed or undone), bitmap, box, original
  // (the automatic bitmap, for "accepted"), rle (the automatic compressed RLE), predictedIou,
  // stability, area, seconds (time spent on it), color, sprite}.

  function makeMask(fields, rle) {
    const { bitmap, box } = rleToBitmap(rle);
    const mask = {
      status: "pending",
      present: true,
      seconds: 0,
      predictedIou: null,
      stability: null,
      ...fields,
      bitmap,
      box,
      original: bitmap,
      rle,
      color: PALETTE[view.masks.length % PALETTE.length],
    };
    paintSprite(mask);
    return mask;
  }

  /** The masks of an image: its automatic ones, with the saved record's decisions applied, then
   * the saved added masks. */
  function masksOf(record) {
    const saved = record.saved;
    const bySource = new Map();
    const added = [];
    const rejected = new Map();
    if (saved) {
      for (const ann of saved.annotations) {
        if (ann.review.source_id === null) added.push(ann);
        else bySource.set(ann.review.source_id, ann);
      }
      for (const entry of saved.review.rejected) rejected.set(entry.source_id, entry);
    }
    for (const ann of record.annotations) {
      const mask = makeMask(
        {
          id: String(ann.id),
          sourceId: ann.id,
          predictedIou: ann.predicted_iou,
          stability: ann.stability_score,
        },
        ann.segmentation,
      );
      view.masks.push(mask);
      const kept = bySource.get(ann.id);
      if (kept) {
        mask.status = kept.review.status;
        mask.seconds = kept.review.seconds;
        if (kept.review.status === "edited") setBitmap(mask, rleToBitmap(kept.segmentation));
      } else if (rejected.has(ann.id)) {
        mask.status = "rejected";
        mask.seconds = rejected.get(ann.id).seconds;
      }
    }
    for (const ann of added) {
      const mask = makeMask(
        { id: String(ann.id), sourceId: null, predictedIou: ann.predicted_iou, pointCoords: ann.point_coords },
        ann.segmentation,
      );
      mask.status = "added";
      mask.seconds = ann.review.seconds;
      view.masks.push(mask);
    }
  }

  function setBitmap(mask, { bitmap, box }) {
    mask.bitmap = bitmap;
    mask.box = box;
    paintSprite(mask);
  }

  /** The mask's overlay: a canvas over its box, the inside translucent, the edge opaque. */
  function paintSprite(mask, color = mask.color) {
    const { bitmap, box } = mask;
    const { width, height } = view;
    let area = 0;
    if (box === null) {
      mask.sprite = null;
      mask.area = 0;
      return;
    }
    const w = box.x1 - box.x0 + 1;
    const h = box.y1 - box.y0 + 1;
    const sprite = document.createElement("canvas");
    sprite.width = w;
    sprite.height = h;
    const spriteContext = sprite.getContext("2d");
    const pixels = spriteContext.createImageData(w, h);
    const data = pixels.data;
    for (let y = box.y0; y <= box.y1; y += 1) {
      const row = y * width;
      for (let x = box.x0; x <= box.x1; x += 1) {
        const i = row + x;
        if (!bitmap[i]) continue;
        area += 1;
        const edge =
          x === 0 || x === width - 1 || y === 0 || y === height - 1 ||
          !bitmap[i - 1] || !bitmap[i + 1] || !bitmap[i - width] || !bitmap[i + width];
        const o = ((y - box.y0) * w + (x - box.x0)) * 4;
        data[o] = edge ? color[0] >> 1 : color[0];
        data[o + 1] = edge ? color[1] >> 1 : color[1];
        data[o + 2] = edge ? color[2] >> 1 : color[2];
        data[o + 3] = edge ? 255 : 150;
      }
    }
    spriteContext.putImageData(pixels, 0, 0);
    mask.sprite = { canvas: sprite, x: box.x0, y: box.y0 };
    mask.area = area;
  }

  const presentMasks = () => view.masks.filter((mask) => mask.present);

  /** The smallest drawn mask under image pixel (x, y), or null. */
  function maskAt(x, y) {
    const i = y * view.width + x;
    let best = null;
    for (const mask of presentMasks()) {
      if (mask.status === "rejected" || !mask.bitmap[i]) continue;
      if (best === null || mask.area < best.area) best = mask;
    }
    return best;
  }

  // ---------------------------------------------------------------- drawing
  let renderPending = false;

  function scheduleRender() {
    if (renderPending) return;
    renderPending = true;
    requestAnimationFrame(() => {
      renderPending = false;
      render();
    });
  }

  function render() {
    if (view === null) return;
    context.globalAlpha = 1;
    context.drawImage(view.photo, 0, 0);
    if (view.showMasks) {
      const drawn = presentMasks()
        .filter((mask) => mask.sprite && (mask.status !== "rejected" || mask === view.selected))
        .sort((a, b) => b.area - a.area);
      const unfocused = view.add ? 0.15 : 0.4; // adding: the candidate stands out
      for (const mask of drawn) {
        const focused = mask === view.selected || mask === view.hovered;
        context.globalAlpha = mask.status === "rejected" ? 0.3 : focused ? 0.95 : unfocused;
        context.drawImage(mask.sprite.canvas, mask.sprite.x, mask.sprite.y);
      }
    }
    const add = view.add;
    if (add && add.candidates.length) {
      const sprite = add.candidates[add.chosen].sprite;
      if (sprite) {
        context.globalAlpha = 0.8;
        context.drawImage(sprite.canvas, sprite.x, sprite.y);
      }
    }
    context.globalAlpha = 1;
    if (add) drawPrompt(add);
    if ((view.mode === "brush" || view.mode === "eraser") && view.pointer) {
      context.strokeStyle = view.mode === "brush" ? "#fff" : "#f44";
      context.lineWidth = Math.max(1, view.width / 600);
      context.beginPath();
      context.arc(view.pointer[0] + 0.5, view.pointer[1] + 0.5, brushSize() / 2, 0, 2 * Math.PI);
      context.stroke();
    }
  }

  function drawPrompt(add) {
    const radius = Math.max(3, view.width / 150);
    for (const [x, y, label] of add.points) {
      context.fillStyle = label === 1 ? "#00e676" : "#ff1744";
      context.strokeStyle = "#000";
      context.lineWidth = 1;
      context.beginPath();
      context.arc(x + 0.5, y + 0.5, radius, 0, 2 * Math.PI);
      context.fill();
      context.stroke();
    }
    const box = add.dragBox || add.box;
    if (box) {
      context.strokeStyle = "#00e5ff";
      context.lineWidth = Math.max(1, view.width / 400);
      context.strokeRect(box[0], box[1], box[2] - box[0], box[3] - box[1]);
    }
  }

  function renderMaskList() {
    const items = presentMasks().map((mask) => {
      const li = document.createElement("li");
      li.dataset.maskId = mask.id;
      li.dataset.status = mask.status;
      li.classList.toggle("selected", mask === view.selected);
      li.classList.toggle("hovered", mask === view.hovered);
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = `rgb(${mask.color.join(",")})`;
      const text = document.createElement("span");
      const iou = mask.predictedIou === null ? "–" : mask.predictedIou.toFixed(3);
      const stability = mask.stability === null ? "–" : mask.stability.toFixed(3);
      text.textContent = `${mask.id} iou ${iou} st ${stability} ${mask.area}px`;
      const status = document.createElement("span");
      status.className = "status";
      status.textContent = mask.status;
      li.append(swatch, text, status);
      return li;
    });
    $("#mask-list").replaceChildren(...items);
    $("#save").textContent = view.unsaved ? "save *" : "save";
  }

  function refresh() {
    renderMaskList();
    scheduleRender();
  }

  /** Selection and hover changed only: restyle the side list's items (never rebuild them under
   * the pointer, which would take the press and the release of a click to different elements). */
  function highlight() {
    for (const li of document.querySelectorAll("#mask-list li[data-mask-id]")) {
      li.classList.toggle("selected", Boolean(view.selected) && li.dataset.maskId === view.selected.id);
      li.classList.toggle("hovered", Boolean(view.hovered) && li.dataset.maskId === view.hovered.id);
    }
    scheduleRender();
  }

  // ---------------------------------------------------------------- time spent
  // Seconds are charged to the mask selected (or the mask being made) while it is.

  function chargeTime(next) {
    const now = performance.now();
    if (view.timed) view.timed.seconds += (now - view.timedSince) / 1000;
    view.timed = next;
    view.timedSince = now;
  }

  function select(mask) {
    view.selected = mask;
    if (!view.add) chargeTime(mask);
    highlight();
    const li = mask && document.querySelector(`#mask-list li[data-mask-id="${mask.id}"]`);
    if (li) li.scrollIntoView({ block: "nearest" });
  }

  // ---------------------------------------------------------------- undo / redo
  // A change is one mask's {status, present, bitmap, box} before and after.

  const snapshot = (mask) => ({ status: mask.status, present: mask.present, bitmap: mask.bitmap, box: mask.box });

  function apply(mask, state) {
    const repaint = mask.bitmap !== state.bitmap || mask.box !== state.box;
    Object.assign(mask, state);
    if (repaint) paintSprite(mask);
  }

  /** Record a change already made to `mask`, whose state was `before`. */
  function recordChange(mask, before) {
    view.done.push({ mask, before, after: snapshot(mask) });
    view.undone = [];
    view.unsaved = true;
    refresh();
  }

  function change(mask, state) {
    const before = snapshot(mask);
    apply(mask, { ...before, ...state });
    recordChange(mask, before);
  }

  function undo() {
    const last = view.done.pop();
    if (!last) return;
    apply(last.mask, last.before);
    view.undone.push(last);
    afterHistory(last.mask);
  }

  function redo() {
    const next = view.undone.pop();
    if (!next) return;
    apply(next.mask, next.after);
    view.done.push(next);
    afterHistory(next.mask);
  }

  function afterHistory(mask) {
    view.unsaved = true;
    if (view.selected && !view.selected.present) view.selected = null;
    if (mask.present) view.selected = mask;
    refresh();
  }

  // ---------------------------------------------------------------- accept / reject
  function accept() {
    const mask = view.selected;
    if (!mask) return setStatus("select a mask first");
    if (mask.sourceId === null) return; // an added mask is kept as it is
    change(mask, { status: mask.bitmap === mask.original ? "accepted" : "edited" });
    selectNext(1);
  }

  function reject() {
    const mask = view.selected;
    if (!mask) return setStatus("select a mask first");
    if (mask.sourceId === null) change(mask, { present: false });
    else change(mask, { status: "rejected" });
    selectNext(1);
  }

  function selectNext(step) {
    const masks = presentMasks();
    if (!masks.length) return;
    const at = masks.indexOf(view.selected);
    const next = at < 0 ? (step > 0 ? 0 : masks.length - 1) : Math.min(masks.length - 1, Math.max(0, at + step));
    select(masks[next]);
  }

  // ---------------------------------------------------------------- brush and eraser
  const brushSize = () => Number($("#brush-size").value);

  function setBrushSize(size) {
    const input = $("#brush-size");
    input.value = Math.min(Number(input.max), Math.max(Number(input.min), size));
    $("#brush-size-value").textContent = input.value;
    scheduleRender();
  }

  /** Set (value 1) or clear (0) the disc of diameter brushSize() at (cx, cy) in the mask. */
  function stamp(mask, cx, cy, value) {
    const { width, height } = view;
    const r = brushSize() / 2;
    const x0 = Math.max(0, Math.ceil(cx - r));
    const x1 = Math.min(width - 1, Math.floor(cx + r));
    const y0 = Math.max(0, Math.ceil(cy - r));
    const y1 = Math.min(height - 1, Math.floor(cy + r));
    for (let y = y0; y <= y1; y += 1) {
      for (let x = x0; x <= x1; x += 1) {
        if ((x - cx) ** 2 + (y - cy) ** 2 <= r * r) mask.bitmap[y * width + x] = value;
      }
    }
    if (value && x0 <= x1 && y0 <= y1) mask.box = growBox(growBox(mask.box, x0, y0), x1, y1);
  }

  function strokeTo(point) {
    const stroke = view.stroke;
    const [fromX, fromY] = stroke.last;
    const steps = Math.max(1, Math.ceil(Math.hypot(point[0] - fromX, point[1] - fromY) / Math.max(1, brushSize() / 4)));
    for (let s = 1; s <= steps; s += 1) {
      stamp(stroke.mask, fromX + ((point[0] - fromX) * s) / steps, fromY + ((point[1] - fromY) * s) / steps, stroke.value);
    }
    stroke.last = point;
    paintSprite(stroke.mask);
    scheduleRender();
  }

  function startStroke(point) {
    const mask = view.selected;
    if (!mask) return setStatus("select a mask to edit first");
    const before = snapshot(mask);
    mask.bitmap = mask.bitmap.slice();
    if (mask.status !== "added") mask.status = "edited";
    view.stroke = { mask, before, last: point, value: view.mode === "brush" ? 1 : 0 };
    stamp(mask, point[0], point[1], view.stroke.value);
    paintSprite(mask);
    scheduleRender();
  }

  function endStroke() {
    const stroke = view.stroke;
    view.stroke = null;
    if (stroke) recordChange(stroke.mask, stroke.before);
  }

  // ---------------------------------------------------------------- adding a mask with SAM
  // view.add: {points [[x, y, label]], box, dragBox, decodeId, candidates, chosen, seconds,
  // queue (the decodes in order: each new click waits for the one before)}.

  function startAdd() {
    view.add = { points: [], box: null, dragBox: null, decodeId: null, candidates: [], chosen: 0, seconds: 0 };
    view.add.queue = Promise.resolve();
    chargeTime(view.add);
    renderCandidates();
  }

  function endAdd() {
    if (!view.add) return;
    chargeTime(view.selected);
    view.add = null;
    renderCandidates();
    scheduleRender();
  }

  /** A new prompt (a point added or the box set) at event time t0: decode it after the decodes before. */
  function prompt(t0) {
    const add = view.add;
    const points = add.points.map((point) => point.slice());
    const box = add.box ? add.box.slice() : null;
    add.queue = add.queue.then(() => decode(add, points, box, t0)).catch(fail);
  }

  async function decode(add, points, box, t0) {
    const previous = add.decodeId === null ? null : { decode_id: add.decodeId, candidate: add.chosen };
    const imageId = view.imageId;
    const result = await api("POST", `/api/images/${imageId}/decode`, { points, box, previous });
    if (view === null || view.add !== add) return; // the add was kept or dropped meanwhile
    add.decodeId = result.decode_id;
    add.candidates = result.candidates.map((candidate) => {
      const shape = { bitmap: null, box: null, sprite: null };
      Object.assign(shape, rleToBitmap(candidate.segmentation));
      paintSprite(shape, CANDIDATE_COLOR);
      return { ...candidate, ...shape };
    });
    add.chosen = add.candidates.reduce((best, c, k) => (c.predicted_iou > add.candidates[best].predicted_iou ? k : best), 0);
    add.request = { points, box, previous };
    showCandidate(add);
    const serverSeconds = result.seconds;
    requestAnimationFrame(() => {
      timings.push(performance.now() - t0);
      decodeSeconds.push(serverSeconds);
    });
  }

  /** Draw the chosen candidate now and note it as the last drawn mask. */
  function showCandidate(add) {
    const candidate = add.candidates[add.chosen];
    lastDrawn = {
      image_id: view.imageId,
      decode_id: add.decodeId,
      candidate: add.chosen,
      predicted_iou: candidate.predicted_iou,
      size: [view.height, view.width],
      counts: bitmapToCounts(candidate.bitmap, view.height, view.width),
      request: add.request,
    };
    renderCandidates();
    render();
  }

  function chooseCandidate(k) {
    const add = view.add;
    if (!add || k >= add.candidates.length) return;
    add.chosen = k;
    showCandidate(add);
  }

  function renderCandidates() {
    const add = view && view.add;
    const box = $("#candidates");
    box.hidden = !add;
    $("#add-mask").classList.toggle("active", Boolean(add));
    if (!add) return;
    box.querySelector("ol").replaceChildren(
      ...add.candidates.map((candidate, k) => {
        const li = document.createElement("li");
        li.dataset.candidate = k;
        li.classList.toggle("chosen", k === add.chosen);
        li.textContent = `IoU ${candidate.predicted_iou.toFixed(3)} · ${candidate.area}px`;
        return li;
      }),
    );
  }

  function keepCandidate() {
    const add = view.add;
    if (!add || !add.candidates.length) return;
    chargeTime(null);
    const candidate = add.candidates[add.chosen];
    view.addedCount += 1;
    const mask = {
      id: `new-${view.addedCount}`,
      sourceId: null,
      status: "added",
      present: false,
      bitmap: candidate.bitmap,
      box: candidate.box,
      original: null,
      rle: null,
      predictedIou: candidate.predicted_iou,
      stability: null,
      seconds: add.seconds,
      pointCoords: add.request.points.filter((point) => point[2] === 1).map((point) => point.slice(0, 2)),
      color: PALETTE[view.masks.length % PALETTE.length],
    };
    paintSprite(mask);
    view.masks.push(mask);
    change(mask, { present: true });
    startAdd();
    view.selected = mask;
    refresh();
  }

  $("#candidates ol").addEventListener("click", (event) => {
    const li = event.target.closest("li[data-candidate]");
    if (li) chooseCandidate(Number(li.dataset.candidate));
  });

  // ---------------------------------------------------------------- modes and the canvas
  function setMode(mode) {
    const next = view.mode === mode ? "select" : mode;
    if (next !== "add") endAdd();
    view.mode = next;
    if (next === "add" && !view.add) startAdd();
    for (const name of ["brush", "eraser"]) $(`#${name}`).classList.toggle("active", next === name);
    scheduleRender();
  }

  /** The image pixel (integer x, y) under a mouse event. */
  function pixelOf(event) {
    const rect = canvas.getBoundingClientRect();
    const x = Math.floor(((event.clientX - rect.left) * canvas.width) / rect.width);
    const y = Math.floor(((event.clientY - rect.top) * canvas.height) / rect.height);
    return [Math.min(view.width - 1, Math.max(0, x)), Math.min(view.height - 1, Math.max(0, y))];
  }

  const DRAG_PIXELS = 5; // screen pixels a press must move to count as a box drag

  canvas.addEventListener("contextmenu", (event) => event.preventDefault());

  canvas.addEventListener("mousedown", (event) => {
    if (view === null) return;
    event.preventDefault();
    const point = pixelOf(event);
    if (view.mode === "brush" || view.mode === "eraser") startStroke(point);
    else if (view.mode === "add") view.press = { point, clientX: event.clientX, clientY: event.clientY };
  });

  canvas.addEventListener("mousemove", (event) => {
    if (view === null) return;
    const point = pixelOf(event);
    view.pointer = point;
    if (view.stroke) return strokeTo(point);
    if (view.mode === "add" && view.press && isDrag(view.press, event)) {
      view.add.dragBox = boxOf(view.press.point, point);
      return scheduleRender();
    }
    const hovered = view.mode === "select" ? maskAt(point[0], point[1]) : null;
    if (hovered !== view.hovered) {
      view.hovered = hovered;
      highlight();
    } else if (view.mode !== "select") scheduleRender();
  });

  canvas.addEventListener("mouseleave", () => {
    if (view === null) return;
    view.pointer = null;
    view.hovered = null;
    endStroke();
    highlight();
  });

  window.addEventListener("mouseup", (event) => {
    if (view === null) return;
    if (view.stroke) return endStroke();
    const press = view.press;
    if (view.mode !== "add" || !press) return;
    view.press = null;
    const add = view.add;
    const t0 = event.timeStamp;
    const point = pixelOf(event);
    add.dragBox = null;
    if (isDrag(press, event)) add.box = boxOf(press.point, point);
    else add.points.push([...press.point, event.button === 2 || event.shiftKey ? 0 : 1]);
    scheduleRender();
    prompt(t0);
  });

  canvas.addEventListener("click", (event) => {
    if (view === null || view.mode !== "select") return;
    const [x, y] = pixelOf(event);
    select(maskAt(x, y));
  });

  const isDrag = (press, event) =>
    Math.max(Math.abs(event.clientX - press.clientX), Math.abs(event.clientY - press.clientY)) >= DRAG_PIXELS;

  const boxOf = (a, b) => [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];

  // ---------------------------------------------------------------- the side list and toolbar
  const maskOfItem = (target) => {
    const li = target.closest("li[data-mask-id]");
    return li ? view.masks.find((mask) => mask.id === li.dataset.maskId && mask.present) : null;
  };
  $("#mask-list").addEventListener("click", (event) => select(maskOfItem(event.target) || null));
  $("#mask-list").addEventListener("mouseover", (event) => {
    const mask = maskOfItem(event.target);
    if (mask && mask !== view.hovered) {
      view.hovered = mask;
      highlight();
    }
  });

  function toggleMasks() {
    view.showMasks = !view.showMasks;
    $("#toggle-masks").firstChild.textContent = view.showMasks ? "hide masks " : "show masks ";
    scheduleRender();
  }

  const ACTIONS = {
    accept,
    reject,
    brush: () => setMode("brush"),
    eraser: () => setMode("eraser"),
    "add-mask": () => setMode("add"),
    "toggle-masks": toggleMasks,
    undo,
    redo,
    save: () => save(view.baseVersion),
  };
  for (const [id, action] of Object.entries(ACTIONS)) {
    $(`#${id}`).addEventListener("click", (event) => {
      event.currentTarget.blur(); // keys (Enter, Space) act on the view, not on the last button clicked
      if (view) action();
    });
  }
  $("#back").addEventListener("click", () => {
    location.hash = "";
  });
  $("#brush-size").addEventListener("input", (event) => setBrushSize(Number(event.target.value)));
  $("#conflict-reload").addEventListener("click", () => openImage(view.imageId));
  $("#conflict-overwrite").addEventListener("click", () => save(view.conflict.stored_version));

  // ---------------------------------------------------------------- keyboard
  const KEYS = {
    a: accept,
    r: reject,
    b: ACTIONS.brush,
    e: ACTIONS.eraser,
    n: ACTIONS["add-mask"],
    h: toggleMasks,
    "[": () => setBrushSize(brushSize() - Math.max(1, Math.round(brushSize() / 8))),
    "]": () => setBrushSize(brushSize() + Math.max(1, Math.round(brushSize() / 8))),
    1: () => chooseCandidate(0),
    2: () => chooseCandidate(1),
    3: () => chooseCandidate(2),
    Enter: keepCandidate,
    Escape: escape,
    ArrowDown: () => selectNext(1),
    ArrowUp: () => selectNext(-1),
    j: () => selectNext(1),
    k: () => selectNext(-1),
  };
  /** Esc drops the mask being added, else leaves the mode (brush, eraser, add). */
  function escape() {
    const add = view.add;
    if (add && (add.points.length || add.box)) startAdd();
    else setMode("select");
    scheduleRender();
  }

  const CTRL_KEYS = { z: undo, y: redo, s: ACTIONS.save };

  document.addEventListener("keydown", (event) => {
    if (view === null || (event.target.tagName === "INPUT" && event.target.type !== "range")) return;
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    let action = null;
    if (event.ctrlKey || event.metaKey) action = key === "z" && event.shiftKey ? redo : CTRL_KEYS[key];
    else if (!event.altKey) action = KEYS[key];
    if (!action) return;
    event.preventDefault();
    action();
  });

  // ---------------------------------------------------------------- saving
  function correctionsBody(baseVersion) {
    chargeTime(view.timed);
    const { width, height } = view;
    // pending masks are left out: every automatic mask the body does not name stays pending
    const masks = presentMasks()
      .filter((mask) => mask.status !== "pending")
      .map((mask) => {
        const entry = {
          source_id: mask.sourceId,
          status: mask.status,
          predicted_iou: mask.predictedIou,
          seconds: Math.round(mask.seconds * 1000) / 1000,
        };
        if (mask.status === "accepted") entry.segmentation = mask.rle;
        else if (mask.status === "edited" || mask.status === "added") {
          entry.segmentation = { size: [height, width], counts: bitmapToCounts(mask.bitmap, height, width) };
        }
        if (mask.pointCoords) entry.point_coords = mask.pointCoords;
        return entry;
      });
    const seconds = view.savedSeconds + (performance.now() - view.openedAt) / 1000;
    return { base_version: baseVersion, seconds_on_image: Math.round(seconds * 1000) / 1000, masks };
  }

  async function save(baseVersion) {
    const imageId = view.imageId;
    setStatus("saving…");
    try {
      const result = await api("PUT", `/api/images/${imageId}/corrections`, correctionsBody(baseVersion));
      if (view === null || view.imageId !== imageId) return;
      view.baseVersion = result.version;
      view.unsaved = false;
      view.conflict = null;
      $("#conflict").hidden = true;
      renderMaskList();
      setStatus(`saved version ${result.version} at ${result.saved_at}`);
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 409)) return fail(error);
      view.conflict = error.body;
      $("#conflict-message").textContent =
        `Not saved: this image was saved elsewhere (version ${error.body.stored_version} at ${error.body.saved_at}) ` +
        `after you opened version ${baseVersion}. Reload it (your changes here are dropped) or overwrite it with yours.`;
      $("#conflict").hidden = false;
      setStatus("conflict: not saved", true);
    }
  }

  window.addEventListener("beforeunload", (event) => {
    if (view && view.unsaved) event.preventDefault();
  });

  // ---------------------------------------------------------------- opening an image
  async function openImage(imageId) {
    const token = (openToken += 1);
    const t0 = performance.now();
    $("#list-view").hidden = true;
    $("#image-view").hidden = false;
    $("#conflict").hidden = true;
    setStatus(`opening image ${imageId}…`);
    view = null;
    const embedding = api("POST", `/api/images/${imageId}/embed`);
    const [record, photo] = await Promise.all([
      api("GET", `/api/images/${imageId}`),
      loadPhoto(`/api/images/${imageId}/image.jpg`),
    ]);
    if (token !== openToken) return;
    const { width, height } = record.image;
    view = {
      imageId,
      width,
      height,
      photo,
      masks: [],
      mode: "select",
      selected: null,
      hovered: null,
      pointer: null,
      showMasks: true,
      add: null,
      stroke: null,
      press: null,
      done: [],
      undone: [],
      unsaved: false,
      addedCount: 0,
      conflict: null,
      baseVersion: record.saved ? record.saved.review.version : 0,
      savedSeconds: record.saved ? record.saved.review.seconds_on_image : 0,
      openedAt: performance.now(),
      timed: null,
      timedSince: performance.now(),
      ready: false,
    };
    canvas.width = width;
    canvas.height = height;
    masksOf(record);
    for (const name of ["brush", "eraser"]) $(`#${name}`).classList.remove("active");
    renderCandidates();
    refresh();
    render();
    showSimilar().catch(fail);
    const shownMs = performance.now() - t0;
    const embedded = await embedding;
    if (token !== openToken) return;
    view.ready = true;
    const readyMs = performance.now() - t0;
    opens.push({ image_id: imageId, shown_ms: shownMs, ready_ms: readyMs, embed: embedded });
    const version = view.baseVersion ? `saved version ${view.baseVersion}` : "not saved yet";
    setStatus(
      `image ${imageId}: ${presentMasks().length} masks, ${version}; ` +
        `embedding ${embedded.source} in ${embedded.seconds.toFixed(2)} s`,
    );
  }

  // ---------------------------------------------------------------- similar images
  const SIMILAR_K = 8;
  let similarToken = 0;

  /** Lists the release's images nearest to the open one by embedding, when the "similar images"
   * panel is open (so a release's embeddings are loaded by the server only when asked for);
   * those under review link to their view. */
  async function showSimilar() {
    const token = (similarToken += 1);
    const list = $("#similar ol");
    const note = $("#similar-note");
    if (!$("#similar").open || view === null) return;
    list.replaceChildren();
    note.textContent = "searching…";
    let answer;
    try {
      answer = await api("GET", `/api/images/${view.imageId}/similar?k=${SIMILAR_K}`);
    } catch (error) {
      if (token === similarToken) note.textContent = error.message;
      return;
    }
    if (token !== similarToken) return;
    note.textContent = answer.similar.length
      ? `nearest by ${answer.model} embedding, cosine; linked: under review here`
      : "no other image in the release";
    for (const entry of answer.similar) {
      const item = document.createElement("li");
      item.dataset.imageId = entry.image_id;
      const label = `sa_${entry.image_id}.jpg ${entry.cosine.toFixed(3)}`;
      if (entry.under_review) {
        const link = document.createElement("a");
        link.href = `#image/${entry.image_id}`;
        link.textContent = label;
        item.append(link);
      } else {
        item.textContent = label;
      }
      list.append(item);
    }
  }
  $("#similar").addEventListener("toggle", () => showSimilar().catch(fail));

  // ---------------------------------------------------------------- routes
  function route() {
    if (view && view.unsaved && location.hash !== `#image/${view.imageId}`) {
      if (!window.confirm("Leave this image? Its changes are not saved.")) {
        history.replaceState(null, "", `#image/${view.imageId}`);
        return;
      }
    }
    const match = /^#image\/([0-9]{1,18})$/.exec(location.hash);
    const done = match ? openImage(Number(match[1])) : showList();
    done.catch(fail);
  }
  window.addEventListener("hashchange", route);
  route();

  // ---------------------------------------------------------------- for tests and benchmarks
  window.review = Object.freeze({
    /** Click (or box release) to drawn candidate, ms per decode, in order. */
    get timings() {
      return timings.slice();
    },
    /** The decoder's own seconds for each of those decodes, as the server reported them. */
    get decodeSeconds() {
      return decodeSeconds.slice();
    },
    /** Each image opened: {image_id, shown_ms (photo and masks drawn), ready_ms (embedded too), embed}. */
    get opens() {
      return opens.map((entry) => ({ ...entry }));
    },
    /** The candidate drawn last: {image_id, decode_id, candidate, predicted_iou, size [h, w],
     * counts (uncompressed column-major RLE), request {points, box, previous}}. */
    get lastDrawn() {
      return lastDrawn && JSON.parse(JSON.stringify(lastDrawn));
    },
    /** The open image: {image_id, ready, base_version, unsaved, masks [{id, source_id, status, area}]}. */
    get state() {
      if (view === null) return null;
      return {
        image_id: view.imageId,
        ready: view.ready,
        base_version: view.baseVersion,
        unsaved: view.unsaved,
        masks: presentMasks().map((m) => ({ id: m.id, source_id: m.sourceId, status: m.status, area: m.area })),
      };
    },
  });
})();
