/**
 * The MONAI Label panel of the radiograph mode: a plain DOM widget (see extension.js for how it is mounted).
 *
 * The annotator's round trip, against the MONAI Label server that serves this OHIF (same origin):
 *   Run       POST /infer/<model>?image=<series>   -> label map 0 background, 1 right lung, 2 left lung,
 *             3 pneumonia (apps/label/lib/labels.py) as a labelmap segmentation over the stack viewport's image,
 *             and DLNet's probability, the per-lung Pneumonia Ratios and 0-4 scores in the panel
 *   edit      OHIF's labelmap toolbox (Brush, Eraser, Threshold) on the segments of that segmentation
 *   Save      PUT /datastore/label?image=<series>&tag=final with the labelmap as label.bin (rows x columns bytes);
 *             the server stores it and writes a DICOM SEG of it to the PACS (apps/label/lib/dicomweb.py)
 *   Next      POST /activelearning/<strategy> -> the next series; its study opens in this mode
 *   Train     POST /train/<trainer>, then GET /train/ every 2 s: status and the last epoch line
 *
 *   Open      a DICOM SEG of the PACS over the image shown (the saved label, round trip), editable and saved again
 *
 * The image id of MONAI Label's DICOMweb datastore is the SeriesInstanceUID. A segmentation opened from a DICOM SEG
 * is saved the same way: its segments are matched to the label values by their labels.
 */

/** Label values by segment label, as the server defines them (apps/label/lib/labels.py). */
export const LABEL_VALUES = { 'right lung': 1, 'left lung': 2, pneumonia: 3 };
const SEGMENT_COLORS = { 1: [64, 160, 255, 255], 2: [80, 220, 120, 255], 3: [255, 60, 40, 255] };
const TRAIN_POLL_MS = 2000;

/** What survives the panel being closed and opened again (one OHIF page). */
const session = { info: null, results: {}, trainer: null, trainStatus: null };

async function api(path, options = {}) {
  const response = await fetch(path, options);
  if (!response.ok) {
    let detail = await response.text();
    try {
      detail = JSON.parse(detail).detail ?? detail;
    } catch (_) {
      /* not JSON: keep the text */
    }
    throw new Error(`${options.method || 'GET'} ${path.split('?')[0]}: HTTP ${response.status} ${detail}`);
  }
  return response;
}

/** The raw uint8 data of an uncompressed NRRD (what /infer answers with result_extension .nrrd). */
export function parseNrrd(bytes) {
  let end = -1;
  for (let i = 0; i < Math.min(bytes.length - 1, 8192); i++) {
    if (bytes[i] === 10 && bytes[i + 1] === 10) {
      end = i;
      break;
    }
  }
  if (end < 0) throw new Error('the infer result is not an NRRD file');
  const header = {};
  for (const line of new TextDecoder().decode(bytes.subarray(0, end)).split('\n')) {
    const at = line.indexOf(':');
    if (at > 0 && !line.startsWith('#')) header[line.slice(0, at).trim()] = line.slice(at + 1).replace(/^=/, '').trim();
  }
  if (header.encoding !== 'raw' || !/^(uchar|uint8|unsigned char)/.test(header.type)) {
    throw new Error(`NRRD ${header.type}/${header.encoding}: expected raw uint8`);
  }
  const sizes = header.sizes.split(/\s+/).map(Number);
  return { columns: sizes[0], rows: sizes[1], data: bytes.subarray(end + 2) };
}

/** The bodies of a multipart/related response (WADO-RS frames), in order. */
export function multipartBodies(bytes, contentType) {
  const boundary = /boundary="?([^";]+)"?/.exec(contentType || '')?.[1];
  if (!boundary) throw new Error(`not a multipart response: ${contentType}`);
  const delimiter = new TextEncoder().encode(`--${boundary}`);
  const find = (from, pattern) => {
    outer: for (let i = from; i <= bytes.length - pattern.length; i++) {
      for (let j = 0; j < pattern.length; j++) if (bytes[i + j] !== pattern[j]) continue outer;
      return i;
    }
    return -1;
  };
  const headerEnd = new Uint8Array([13, 10, 13, 10]);
  const bodies = [];
  let at = find(0, delimiter);
  while (at >= 0) {
    const start = find(at + delimiter.length, headerEnd);
    const next = find(at + delimiter.length, delimiter);
    if (start < 0 || next < 0 || start > next) break;
    bodies.push(bytes.subarray(start + 4, next - 2)); // the body ends with CRLF before the next delimiter
    at = next;
  }
  return bodies;
}

export class MonaiLabelPanel {
  constructor(root, { servicesManager, extensionManager }) {
    this.root = root;
    this.services = servicesManager.services;
    const common = extensionManager.getModuleEntry('@ohif/extension-cornerstone.utilityModule.common');
    const { cornerstone, cornerstoneTools } = common.exports.getCornerstoneLibraries();
    this.cornerstone = cornerstone;
    this.cornerstoneTools = cornerstoneTools;
    this.render();
    this.connect();
    if (session.trainStatus?.status === 'RUNNING') this.pollTraining();
    // read-only view for scripted checks (tests/label/browser): what the viewport shows, and the label to be saved
    window.pneumonitorOHIF = { state: () => this.viewerState(), labelmap: () => this.currentLabelmap() };
  }

  // -- view ------------------------------------------------------------------------------------------------
  render() {
    this.root.innerHTML = `
      <div class="flex flex-col gap-2 p-2 text-sm text-white" data-cy="pneumonitor-panel">
        <div class="text-primary-light text-base font-semibold">MONAI Label</div>
        <div data-cy="ml-server" class="text-aqua-pale">connecting...</div>
        <fieldset class="border-secondary-light flex flex-col gap-1 rounded border p-2">
          <legend class="px-1">Auto-segmentation</legend>
          <div class="flex gap-2"><select data-cy="ml-model" class="bg-black text-white grow"></select>
            <button data-cy="ml-run" class="bg-primary-main rounded px-3">Run</button></div>
          <div data-cy="ml-result" class="whitespace-pre-wrap font-mono text-xs"></div>
          <button data-cy="ml-save" class="bg-primary-main rounded px-3 py-1">Save label</button>
          <div data-cy="ml-saved" class="break-all text-xs"></div>
        </fieldset>
        <fieldset class="border-secondary-light flex flex-col gap-1 rounded border p-2">
          <legend class="px-1">Saved annotations (DICOM SEG)</legend>
          <div class="flex gap-2"><select data-cy="ml-segs" class="bg-black text-white grow"></select>
            <button data-cy="ml-open-seg" class="bg-primary-main rounded px-3">Open</button></div>
          <div data-cy="ml-seg-result" class="break-all text-xs"></div>
        </fieldset>
        <fieldset class="border-secondary-light flex flex-col gap-1 rounded border p-2">
          <legend class="px-1">Active learning</legend>
          <div class="flex gap-2"><select data-cy="ml-strategy" class="bg-black text-white grow"></select>
            <button data-cy="ml-next" class="bg-primary-main rounded px-3">Next sample</button></div>
          <div data-cy="ml-next-result" class="break-all text-xs"></div>
        </fieldset>
        <fieldset class="border-secondary-light flex flex-col gap-1 rounded border p-2">
          <legend class="px-1">Training</legend>
          <div class="flex gap-2"><select data-cy="ml-trainer" class="bg-black text-white grow"></select>
            <label>epochs <input data-cy="ml-epochs" type="number" min="1" value="30" class="w-14 bg-black text-white"></label>
            <button data-cy="ml-train" class="bg-primary-main rounded px-3">Train</button></div>
          <div data-cy="ml-train-status" class="whitespace-pre-wrap font-mono text-xs"></div>
        </fieldset>
        <div data-cy="ml-error" class="text-red-500 whitespace-pre-wrap text-xs"></div>
      </div>`;
    const $ = (name) => this.root.querySelector(`[data-cy="${name}"]`);
    this.el = new Proxy({}, { get: (_, name) => $(`ml-${name}`) });
    this.el.run.onclick = () => this.guard(() => this.runModel(this.el.model.value));
    this.el.save.onclick = () => this.guard(() => this.saveLabel());
    this.el.segs.onfocus = () => this.listSegs();
    this.el['open-seg'].onclick = () => this.guard(() => {
      this.listSegs();
      return this.openSeg(this.el.segs.value);
    });
    this.el.next.onclick = () => this.guard(() => this.nextSample(this.el.strategy.value));
    this.el.train.onclick = () => this.guard(() => this.startTraining(this.el.trainer.value, Number(this.el.epochs.value)));
    this.showResult();
    this.showTraining();
    this.listSegs();
    // the SEG list follows the study's display sets and the image shown
    const { displaySetService, viewportGridService } = this.services;
    const subscriptions = [
      displaySetService.subscribe(displaySetService.EVENTS.DISPLAY_SETS_ADDED, () => this.listSegs()),
      viewportGridService.subscribe(viewportGridService.EVENTS.GRID_STATE_CHANGED, () => this.listSegs()),
      viewportGridService.subscribe(viewportGridService.EVENTS.VIEWPORTS_READY, () => this.listSegs()),
    ];
    this.unsubscribe = () => subscriptions.forEach((s) => s.unsubscribe());
  }

  async guard(action) {
    this.el.error.textContent = '';
    try {
      await action();
    } catch (error) {
      console.error('MONAI Label:', error);
      this.el.error.textContent = String(error.message || error);
      this.services.uiNotificationService?.show({ title: 'MONAI Label', message: String(error.message || error), type: 'error' });
    }
  }

  setOptions(select, names, preferred) {
    select.innerHTML = names.map((n) => `<option value="${n}">${n}</option>`).join('');
    if (names.includes(preferred)) select.value = preferred;
  }

  // -- server ----------------------------------------------------------------------------------------------
  async connect() {
    await this.guard(async () => {
      session.info = session.info || (await (await api('/info/')).json());
      const { name, models = {}, strategies = {}, trainers = {} } = session.info;
      this.el.server.textContent = `${name}: models ${Object.keys(models).join(', ') || 'none (no weights)'}`;
      this.setOptions(this.el.model, Object.keys(models), 'pneumonia');
      this.setOptions(this.el.strategy, Object.keys(strategies), 'epistemic');
      this.setOptions(this.el.trainer, Object.keys(trainers), 'dlnet');
      const epochsOf = () => trainers[this.el.trainer.value]?.config?.max_epochs;
      this.el.trainer.onchange = () => (this.el.epochs.value = epochsOf() || this.el.epochs.value);
      this.el.trainer.onchange();
    });
  }

  /** The image of the active viewport: its display set, the series (MONAI Label's image id) and the study. */
  activeImage() {
    const { viewportGridService, displaySetService } = this.services;
    const viewportId = viewportGridService.getActiveViewportId();
    const viewport = viewportGridService.getState().viewports.get(viewportId);
    let displaySet = viewport && displaySetService.getDisplaySetByUID(viewport.displaySetInstanceUIDs[0]);
    if (displaySet?.referencedDisplaySetInstanceUID) {
      // a SEG shown over its image: the image is the referenced display set
      displaySet = displaySetService.getDisplaySetByUID(displaySet.referencedDisplaySetInstanceUID);
    }
    if (!displaySet?.imageIds?.length) throw new Error('no image in the active viewport');
    const instance = displaySet.instances?.[0] || displaySet.instance || {};
    return {
      viewportId,
      displaySet,
      series: displaySet.SeriesInstanceUID,
      study: displaySet.StudyInstanceUID,
      rows: Number(instance.Rows),
      columns: Number(instance.Columns),
    };
  }

  /** Viewport type, the image shown and the segmentations on it. */
  viewerState() {
    const image = this.activeImage();
    const viewport = this.services.cornerstoneViewportService.getCornerstoneViewport(image.viewportId);
    const segmentations = this.services.segmentationService
      .getSegmentationRepresentations(image.viewportId)
      .map(({ segmentationId, active }) => ({
        segmentationId,
        active,
        label: this.services.segmentationService.getSegmentation(segmentationId)?.label,
      }));
    return {
      viewportType: viewport?.type,
      imageShown: Boolean(viewport?.getCurrentImageId?.()),
      study: image.study,
      series: image.series,
      modality: image.displaySet.Modality,
      rows: image.rows,
      columns: image.columns,
      segmentations,
    };
  }

  // -- auto-segmentation -----------------------------------------------------------------------------------
  async runModel(model) {
    const image = this.activeImage();
    this.el.result.textContent = `running ${model} on series ${image.series} ...`;
    const form = new FormData();
    form.append('params', JSON.stringify({ result_extension: '.nrrd', result_dtype: 'uint8', result_compress: false }));
    const response = await api(`/infer/${encodeURIComponent(model)}?image=${encodeURIComponent(image.series)}`, {
      method: 'POST',
      body: form,
    });
    const parts = await response.formData();
    const params = JSON.parse(parts.get('params') || '{}');
    const file = parts.get('image');
    if (!file) throw new Error(`${model} answered without a label image: ${JSON.stringify(params)}`);
    const label = parseNrrd(new Uint8Array(await file.arrayBuffer()));
    if (label.rows !== image.rows || label.columns !== image.columns) {
      throw new Error(`label ${label.rows} x ${label.columns} for an image of ${image.rows} x ${image.columns}`);
    }
    await this.showLabelmap(image, label.data, `${model} (MONAI Label)`);
    session.results[image.series] = { model, params };
    this.showResult(image.series);
  }

  showResult(series) {
    if (!this.el.result) return;
    let current = series;
    if (!current) {
      try {
        current = this.activeImage().series;
      } catch (_) {
        return;
      }
    }
    const entry = session.results[current];
    if (!entry) return;
    const p = entry.params;
    const pct = (v) => (v === undefined ? '-' : `${Number(v).toFixed(1)} %`);
    const lines = [`${entry.model} on ${current.slice(-12)}`];
    if (p.pneumonia_probability !== undefined) {
      lines.push(`probability   ${Number(p.pneumonia_probability).toFixed(3)} (threshold ${p.classification_threshold})`);
      lines.push(`ratio right   ${pct(p.ratio_right)}   score ${p.score_right}`);
      lines.push(`ratio left    ${pct(p.ratio_left)}   score ${p.score_left}`);
      lines.push(`ratio total   ${pct(p.ratio_total)}   score ${p.score_total} / 8`);
      lines.push(`source        ${p.source}${p.source === 'gradcam-proposal' ? ` (${p.boxes} boxes)` : ''}`);
      if (p.source === 'gradcam-proposal') {
        // the mask is the Grad-CAM proposal inside the boxes; the ratios above are those of DLNet's heatmap
        lines.push(`proposal      ${(100 * Number(p.proposal_fraction_of_boxes || 0)).toFixed(1)} % of the boxes`);
      }
    }
    if (p.qc) lines.push(`qc            ${p.qc}`);
    if (p.ood) lines.push(`ood           ${p.ood}`);
    this.el.result.textContent = lines.join('\n');
  }

  segmentationIdFor(series) {
    return `pneumonitor-${series}`;
  }

  /** Shows `data` (rows x columns label values) as the labelmap segmentation of the image, created if needed. */
  async showLabelmap(image, data, label, segmentationId = this.segmentationIdFor(image.series)) {
    const { segmentationService } = this.services;
    if (!segmentationService.getSegmentation(segmentationId)) {
      const segments = {};
      for (const [name, value] of Object.entries(LABEL_VALUES)) {
        segments[value] = { label: name, active: value === LABEL_VALUES.pneumonia, locked: false };
      }
      await segmentationService.createLabelmapForDisplaySet(image.displaySet, { segmentationId, label, segments });
    }
    await segmentationService.addSegmentationRepresentation(image.viewportId, { segmentationId });
    for (const [value, color] of Object.entries(SEGMENT_COLORS)) {
      segmentationService.setSegmentColor(image.viewportId, segmentationId, Number(value), color);
    }
    const labelImage = this.labelmapImage(segmentationId, image);
    const scalars = labelImage.voxelManager.getScalarData();
    if (scalars.length !== data.length) throw new Error(`labelmap of ${scalars.length} pixels, label of ${data.length}`);
    scalars.set(data);
    labelImage.voxelManager.setScalarData(scalars);
    segmentationService.setActiveSegmentation(image.viewportId, segmentationId);
    segmentationService.setActiveSegment(segmentationId, LABEL_VALUES.pneumonia);
    this.cornerstoneTools.segmentation.triggerSegmentationEvents.triggerSegmentationDataModified(segmentationId);
  }

  /** The cached labelmap image of a segmentation that lies over the image shown. */
  labelmapImage(segmentationId, image) {
    const segmentation = this.services.segmentationService.getSegmentation(segmentationId);
    const labelmap = segmentation?.representationData?.Labelmap;
    if (!labelmap?.imageIds?.length) throw new Error(`segmentation ${segmentationId} has no labelmap images`);
    const referenced = labelmap.referencedImageIds || [];
    const index = Math.max(0, referenced.indexOf(image.displaySet.imageIds[0]));
    const labelImage = this.cornerstone.cache.getImage(labelmap.imageIds[index]);
    if (!labelImage) throw new Error(`labelmap image ${labelmap.imageIds[index]} is not loaded`);
    return labelImage;
  }

  /** The label map (values 0-3) of the active segmentation over the active image, ready to save. */
  currentLabelmap() {
    const image = this.activeImage();
    const { segmentationService } = this.services;
    const active = segmentationService.getActiveSegmentation(image.viewportId);
    if (!active) throw new Error('no segmentation on this image: run a model or add a segmentation first');
    const segmentationId = active.segmentationId;
    const remap = new Uint8Array(256);
    const unknown = [];
    for (const [index, segment] of Object.entries(active.segments || {})) {
      const value = LABEL_VALUES[String(segment?.label || '').trim().toLowerCase()];
      if (value) remap[Number(index)] = value;
      else if (segment) unknown.push(`${index}: ${segment.label}`);
    }
    if (unknown.length) {
      throw new Error(`segments ${unknown.join(', ')} are not labels of this app (${Object.keys(LABEL_VALUES).join(', ')})`);
    }
    const scalars = this.labelmapImage(segmentationId, image).voxelManager.getScalarData();
    const label = new Uint8Array(scalars.length);
    const counts = [0, 0, 0, 0];
    for (let i = 0; i < scalars.length; i++) {
      label[i] = remap[scalars[i]];
      counts[label[i]]++;
    }
    return { ...image, displaySet: undefined, segmentationId, label, counts };
  }

  async saveLabel() {
    const current = this.currentLabelmap();
    const form = new FormData();
    form.append('params', JSON.stringify({ source: 'OHIF', segmentation: current.segmentationId }));
    form.append('label', new Blob([current.label]), 'label.bin');
    const url = `/datastore/label?image=${encodeURIComponent(current.series)}&tag=final`;
    const saved = await (await api(url, { method: 'PUT', body: form })).json();
    const [, right, left, pneumonia] = current.counts;
    this.el.saved.textContent = `saved ${saved.label || current.series} (final): ${right} right lung, ${left} left lung, ` +
      `${pneumonia} pneumonia pixels; DICOM SEG sent to the PACS`;
    this.services.uiNotificationService?.show({ title: 'MONAI Label', message: 'Label saved', type: 'success' });
  }

  // -- saved annotations ----------------------------------------------------------------------------------
  /** The DICOM SEG display sets over the image shown, newest first. */
  segsOfImage() {
    let image;
    try {
      image = this.activeImage();
    } catch (_) {
      return [];
    }
    const created = (ds) => `${ds.instance?.ContentDate || ds.SeriesDate || ''}${ds.instance?.ContentTime || ''}`;
    return this.services.displaySetService
      .getActiveDisplaySets()
      .filter((ds) => ds.Modality === 'SEG' && ds.referencedSeriesInstanceUID === image.series)
      .sort((a, b) => created(b).localeCompare(created(a)));
  }

  listSegs() {
    if (!this.root.isConnected) {
      this.unsubscribe?.();
      return;
    }
    const segs = this.segsOfImage();
    const chosen = this.el.segs.value;
    this.el.segs.innerHTML = segs.length
      ? segs.map((ds) => `<option value="${ds.displaySetInstanceUID}">${ds.SeriesDescription || 'SEG'} ` +
          `(${ds.instance?.ContentDate || ds.SeriesDate || ''} ${String(ds.instance?.ContentTime || '').slice(0, 6)})</option>`).join('')
      : '<option value="">none for this image</option>';
    if (segs.some((ds) => ds.displaySetInstanceUID === chosen)) this.el.segs.value = chosen;
  }

  /**
   * Lays a DICOM SEG of the PACS over its radiograph as an editable labelmap. OHIF's own SEG loader
   * (@cornerstonejs/adapters) needs a plane orientation, which a SEG of a projection image has not; this reads the
   * SEG's metadata (segments, per-frame source image and segment number, from OHIF's SEG display set) and its frames
   * (WADO-RS, through the server's DICOMweb proxy), and draws each segment with the label value of its label.
   */
  async openSeg(displaySetInstanceUID) {
    const segDisplaySet = this.services.displaySetService.getDisplaySetByUID(displaySetInstanceUID);
    if (!segDisplaySet) throw new Error('no DICOM SEG chosen (none for this image?)');
    const image = this.activeImage();
    const seg = segDisplaySet.instance;
    const asList = (value) => (Array.isArray(value) ? value : value ? [value] : []);
    const valueOfSegment = {};
    for (const segment of asList(seg.SegmentSequence)) {
      const value = LABEL_VALUES[String(segment.SegmentLabel || '').trim().toLowerCase()];
      if (!value) throw new Error(`SEG segment ${segment.SegmentNumber} "${segment.SegmentLabel}" is no label of this app`);
      valueOfSegment[segment.SegmentNumber] = value;
    }
    const imageSop = (image.displaySet.instances?.[0] || {}).SOPInstanceUID;
    const frames = asList(seg.PerFrameFunctionalGroupsSequence)
      .map((group, index) => ({
        number: index + 1,
        value: valueOfSegment[asList(group.SegmentIdentificationSequence)[0]?.ReferencedSegmentNumber],
        sources: asList(group.DerivationImageSequence).flatMap((d) => asList(d.SourceImageSequence))
          .map((s) => s.ReferencedSOPInstanceUID),
      }))
      .filter((frame) => frame.value && (!frame.sources.length || frame.sources.includes(imageSop)))
      .sort((a, b) => a.value - b.value); // pneumonia (3) last: it is painted over the lungs
    if (!frames.length) throw new Error(`SEG ${seg.SOPInstanceUID} has no frame over image ${imageSop}`);
    const pixels = image.rows * image.columns;
    if (Number(seg.Rows) !== image.rows || Number(seg.Columns) !== image.columns) {
      throw new Error(`SEG of ${seg.Rows} x ${seg.Columns} over an image of ${image.rows} x ${image.columns}`);
    }
    const wadoRoot = segDisplaySet.wadoRoot || '/proxy/dicom/wado';
    const url = `${wadoRoot}/studies/${seg.StudyInstanceUID}/series/${seg.SeriesInstanceUID}/instances/` +
      `${seg.SOPInstanceUID}/frames/${frames.map((f) => f.number).join(',')}`;
    const response = await api(url);
    const parts = multipartBodies(new Uint8Array(await response.arrayBuffer()), response.headers.get('content-type'));
    if (parts.length !== frames.length) throw new Error(`asked ${frames.length} SEG frames, got ${parts.length}`);
    const label = new Uint8Array(pixels);
    const bitPacked = Number(seg.BitsAllocated) === 1;
    frames.forEach((frame, k) => {
      const bytes = parts[k];
      for (let i = 0; i < pixels; i++) {
        const set = bitPacked ? (bytes[i >> 3] >> (i & 7)) & 1 : bytes[i];
        if (set) label[i] = frame.value;
      }
    });
    await this.showLabelmap(image, label, `${segDisplaySet.SeriesDescription || 'SEG'} (DICOM SEG)`,
                            `seg-${seg.SeriesInstanceUID}`);
    const counts = [0, 0, 0, 0];
    for (let i = 0; i < pixels; i++) counts[label[i]]++;
    this.el['seg-result'].textContent = `opened SEG ${seg.SeriesInstanceUID.slice(-12)}: ${counts[1]} right lung, ` +
      `${counts[2]} left lung, ${counts[3]} pneumonia pixels`;
  }

  // -- active learning -------------------------------------------------------------------------------------
  async nextSample(strategy) {
    const sample = await (await api(`/activelearning/${encodeURIComponent(strategy)}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: '{}',
    })).json();
    if (!sample.id) throw new Error(`strategy ${strategy} found no image to annotate`);
    const info = await (await api(`/datastore/image/info?image=${encodeURIComponent(sample.id)}`)).json();
    if (!info.StudyInstanceUID) throw new Error(`image ${sample.id} is not a DICOMweb series: OHIF shows DICOMweb studies only`);
    this.el['next-result'].textContent = `next (${strategy}): series ${sample.id}`;
    const query = new URLSearchParams({ StudyInstanceUIDs: info.StudyInstanceUID, SeriesInstanceUIDs: sample.id });
    window.location.assign(`${window.location.pathname}?${query}`);
  }

  // -- training --------------------------------------------------------------------------------------------
  async startTraining(trainer, epochs) {
    await api(`/train/${encodeURIComponent(trainer)}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ max_epochs: epochs }),
    });
    session.trainer = trainer;
    session.trainStatus = { status: 'RUNNING', details: [`${trainer}: started, ${epochs} epochs`] };
    this.showTraining();
    this.pollTraining();
  }

  pollTraining() {
    clearTimeout(this.poll);
    this.poll = setTimeout(async () => {
      if (!this.root.isConnected) return;
      try {
        session.trainStatus = await (await api('/train/')).json();
      } catch (error) {
        session.trainStatus = { status: 'UNKNOWN', details: [String(error.message || error)] };
      }
      this.showTraining();
      if (session.trainStatus?.status === 'RUNNING') this.pollTraining();
    }, TRAIN_POLL_MS);
  }

  showTraining() {
    const status = session.trainStatus;
    if (!status || !this.el['train-status']) return;
    const details = Array.isArray(status.details) ? status.details : [String(status.details || '')];
    const last = (pattern) => [...details].reverse().find((line) => pattern.test(line));
    const lines = [`${session.trainer || 'training'}: ${status.status}`];
    // the bundle trainer's progress line: "Epoch: 2/30, Iter: 5/12 -- train_loss: 0.4210"
    const progress = last(/Epoch: \d+\/\d+, Iter: \d+\/\d+/)?.match(/Epoch: (\d+)\/(\d+), Iter: (\d+)\/(\d+)(?: -- train_loss: ([\d.]+))?/);
    if (progress) {
      const [, epoch, epochs, iteration, iterations, loss] = progress;
      lines.push(`epoch ${epoch}/${epochs}, iteration ${iteration}/${iterations}${loss ? `, train loss ${loss}` : ''}`);
    }
    const decision = last(/'decision': '[^']+'|"decision": "[^"]+"/)?.match(/decision['"]: ['"]([^'"]+)/);
    if (decision) lines.push(`new weights: ${decision[1]}`);
    if (status.status === 'ERROR') lines.push((last(/Error|Exception/) || details[details.length - 1] || '').slice(-200));
    if (!progress && status.status === 'RUNNING') lines.push((details[details.length - 1] || '').slice(-120));
    this.el['train-status'].textContent = lines.join('\n');
  }
}
