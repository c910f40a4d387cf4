// Earmark's page: upload or record audio, read the transcript beside a timeline of its sounds.
// Plain JavaScript, no framework, no build step; everything comes from this server.
//
// How audio reaches the API: a *source* (a chosen file, or a recording from the microphone) hands a
// Blob to a *transport*. The one transport today uploads it to /v1/audio/transcriptions and shows the
// verbose_json answer. The microphone recorder delivers its chunks as they arrive (onChunk), so a
// live transport (a WebSocket sending those chunks and showing partial results) can be added to
// TRANSPORTS and chosen in startRecording without changing the rest.
"use strict";

const LANGUAGES = [
  ["af", "Afrikaans"], ["sq", "Albanian"], ["am", "Amharic"], ["ar", "Arabic"], ["hy", "Armenian"],
  ["as", "Assamese"], ["az", "Azerbaijani"], ["ba", "Bashkir"], ["eu", "Basque"], ["be", "Belarusian"],
  ["bn", "Bengali"], ["bs", "Bosnian"], ["br", "Breton"], ["bg", "Bulgarian"], ["yue", "Cantonese"],
  ["ca", "Catalan"], ["zh", "Chinese"], ["hr", "Croatian"], ["cs", "Czech"], ["da", "Danish"],
  ["nl", "Dutch"], ["en", "English"], ["et", "Estonian"], ["fo", "Faroese"], ["fi", "Finnish"],
  ["fr", "French"], ["gl", "Galician"], ["ka", "Georgian"], ["de", "German"], ["el", "Greek"],
  ["gu", "Gujarati"], ["ht", "Haitian Creole"], ["ha", "Hausa"], ["haw", "Hawaiian"], ["he", "Hebrew"],
  ["hi", "Hindi"], ["hu", "Hungarian"], ["is", "Icelandic"], ["id", "Indonesian"], ["it", "Italian"],
  ["ja", "Japanese"], ["jw", "Javanese"], ["kn", "Kannada"], ["kk", "Kazakh"], ["km", "Khmer"],
  ["ko", "Korean"], ["lo", "Lao"], ["la", "Latin"], ["lv", "Latvian"], ["ln", "Lingala"],
  ["lt", "Lithuanian"], ["lb", "Luxembourgish"], ["mk", "Macedonian"], ["mg", "Malagasy"], ["ms", "Malay"],
  ["ml", "Malayalam"], ["mt", "Maltese"], ["mi", "Maori"], ["mr", "Marathi"], ["mn", "Mongolian"],
  ["my", "Myanmar"], ["ne", "Nepali"], ["no", "Norwegian"], ["nn", "Nynorsk"], ["oc", "Occitan"],
  ["ps", "Pashto"], ["fa", "Persian"], ["pl", "Polish"], ["pt", "Portuguese"], ["pa", "Punjabi"],
  ["ro", "Romanian"], ["ru", "Russian"], ["sa", "Sanskrit"], ["sr", "Serbian"], ["sn", "Shona"],
  ["sd", "Sindhi"], ["si", "Sinhala"], ["sk", "Slovak"], ["sl", "Slovenian"], ["so", "Somali"],
  ["es", "Spanish"], ["su", "Sundanese"], ["sw", "Swahili"], ["sv", "Swedish"], ["tl", "Tagalog"],
  ["tg", "Tajik"], ["ta", "Tamil"], ["tt", "Tatar"], ["te", "Telugu"], ["th", "Thai"], ["bo", "Tibetan"],
  ["tr", "Turkish"], ["tk", "Turkmen"], ["uk", "Ukrainian"], ["ur", "Urdu"], ["uz", "Uzbek"],
  ["vi", "Vietnamese"], ["cy", "Welsh"], ["yi", "Yiddish"], ["yo", "Yoruba"]
];

const KEY_STORAGE = "earmark-api-key";
const MAX_LANES = 6;
// Sound cues in the transcript follow the service's subtitles (tagger/writers.py sound_cues): the
// result's sound events that are not speech or silence, where spoken segments cover less than
// CUE_MAX_SPEECH of the event.
const NOT_CUES = new Set(["/m/09x0r", "/m/05zppz", "/m/02zsn", "/m/0ytgt", "/m/01h8n0", "/m/02qldy", "/m/0261r1",
                          "/m/0brhx", "/m/028v0c"]);
const CUE_MAX_SPEECH = 0.5;
const DOWNLOADS = {text: ["txt", "text/plain"], srt: ["srt", "application/x-subrip"], vtt: ["vtt", "text/vtt"],
                   verbose_json: ["json", "application/json"]};
const RECORDING_TYPES = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/webm", "audio/mp4"];

const $ = (id) => document.getElementById(id);

const state = {
  audio: null,      // {blob, name}: what the player plays and a run uploads
  audioUrl: null,
  result: null,     // the verbose_json answer, parsed
  resultText: "",   // ... and as the API sent it (the JSON download)
  request: null,    // {blob, name, endpoint, fields} that produced the result (the other downloads repeat it)
  job: null,        // {xhr, cancelled} of the request in flight
  busy: false,
  englishOnly: false,
  hasHead: true,
  keyPrompt: null,  // the pending request for an API key
  lanes: [],
};

/** An error the page shows: what went wrong and what to do, in plain words. */
class PageError extends Error {}
class Cancelled extends Error {}

// --- small helpers ----------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

function clock(seconds) {
  const s = Math.max(0, seconds);
  const hours = Math.floor(s / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  const rest = (s % 60).toFixed(1).padStart(4, "0");
  return hours ? `${hours}:${String(minutes).padStart(2, "0")}:${rest}` : `${minutes}:${rest}`;
}

const percent = (p) => `${Math.round(p * 100)} %`;
const cueName = (name) => name.split(",")[0].trim();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function baseName(name) {
  const stem = (name || "audio").replace(/\.[^.]*$/, "");
  return stem.replace(/[^\w.-]+/g, "_") || "audio";
}

// --- status, errors, the API key -------------------------------------------------------------

function setStatus(text, progress) {
  $("status-text").textContent = text;
  const bar = $("progress");
  bar.hidden = progress === undefined;
  if (progress === null) bar.removeAttribute("value");  // indeterminate: the server is working
  else if (progress !== undefined) bar.value = progress;
}

function showError(error) {
  const box = $("error");
  if (error instanceof Cancelled) return;
  box.textContent = error instanceof PageError ? error.message
    : `Something went wrong in the page (${error && error.message ? error.message : error}). Reload it and try again.`;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function explain(status, body, retryAfter) {
  let message = "";
  let code = "";
  try {
    const parsed = JSON.parse(body);
    message = ((parsed.error && parsed.error.message) || "").trim().replace(/\.$/, "");
    code = (parsed.error && parsed.error.code) || "";
  } catch (_) {
    message = (body || "").slice(0, 200);
  }
  const why = message ? ` (${message})` : "";
  const wait = retryAfter ? `${retryAfter} second${Number(retryAfter) === 1 ? "" : "s"}` : "a moment";
  if (status === 413) {
    return `The file is too big for this server${why}. Choose a shorter or smaller file, or cut it into parts.`;
  }
  if (status === 415 || code === "undecodable_audio") {
    return `This file is not audio the server can read${why}. Choose an audio or video file, ` +
           "such as WAV, MP3, FLAC, OGG, M4A or WebM.";
  }
  if (code === "empty_audio") return `The file holds no audio${why}. Choose a recording that is not empty.`;
  if (status === 503 && code === "model_loading") return `The model is still loading. Try again in ${wait}.`;
  if (status === 503 && code === "queue_full") {
    return `The server is busy with other requests. Try again in ${wait}.`;
  }
  if (status === 503) return `The server cannot take requests right now${why}. Try again in ${wait}.`;
  if (status === 408) return `The upload stalled${why}. Check the connection, then try again.`;
  if (status === 504) return `The server took too long on this file${why}. Try a shorter file.`;
  if (status === 400) return `The server refused the request${why}. Check the file and the options, then try again.`;
  if (status >= 500) return `The server failed on this request${why}. Try again; if it fails again, its log says why.`;
  return `The server answered ${status}${why}.`;
}

function askForKey(body) {
  if (state.keyPrompt) return state.keyPrompt.promise;
  const had = sessionStorage.getItem(KEY_STORAGE);
  let detail = "";
  try { detail = JSON.parse(body).error.message; } catch (_) { /* no JSON body */ }
  $("key-message").textContent = had
    ? `The server did not accept this API key${detail ? ` (${detail})` : ""}. Enter the right key.`
    : "This server needs an API key. Enter it to continue; it is kept in this browser tab only.";
  const form = $("key-form");
  const before = document.activeElement;
  form.hidden = false;
  $("key").value = "";
  $("key").focus();
  const prompt = {before};
  prompt.promise = new Promise((resolve, reject) => {
    prompt.resolve = resolve;
    prompt.reject = reject;
  });
  state.keyPrompt = prompt;
  return prompt.promise;
}

function answerKeyPrompt(key) {
  const prompt = state.keyPrompt;
  if (!prompt) return;
  state.keyPrompt = null;
  $("key-form").hidden = true;
  if (prompt.before && prompt.before !== document.body && document.contains(prompt.before)) prompt.before.focus();
  if (key) {
    sessionStorage.setItem(KEY_STORAGE, key);
    prompt.resolve(key);
  } else {
    prompt.reject(new PageError("This server needs an API key. The page asks for it again at the next request " +
                                "(reload the page, choose a file or press Run again)."));
  }
}

/** One HTTP request; resolves with {status, text, retryAfter}, whatever the status. */
function send(method, path, body, job, onUpload) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, path);
    const key = sessionStorage.getItem(KEY_STORAGE);
    if (key) xhr.setRequestHeader("Authorization", `Bearer ${key}`);
    if (onUpload) {
      xhr.upload.onprogress = (event) => { if (event.lengthComputable) onUpload(event.loaded / event.total); };
      xhr.upload.onload = () => onUpload(1);
    }
    xhr.onload = () => resolve({status: xhr.status, text: xhr.responseText,
                                retryAfter: xhr.getResponseHeader("Retry-After")});
    xhr.onerror = () => reject(new PageError("The page could not reach the server. Check that it is running " +
                                             "and that this computer is online, then try again."));
    xhr.onabort = () => reject(new Cancelled("cancelled"));
    if (job) {
      if (job.cancelled) { reject(new Cancelled("cancelled")); return; }
      job.xhr = xhr;
    }
    xhr.send(body);
  });
}

/** An API call: asks for the key on 401 and repeats; throws a PageError for any other failure. */
async function api(method, path, makeBody, job, onUpload) {
  for (;;) {
    const answer = await send(method, path, makeBody ? makeBody() : null, job, onUpload);
    if (answer.status === 401) {
      await askForKey(answer.text);
      continue;
    }
    if (answer.status >= 200 && answer.status < 300) return answer;
    throw new PageError(explain(answer.status, answer.text, answer.retryAfter));
  }
}

// --- the server: model, head, languages --------------------------------------------------------

async function connect() {
  try {
    let card;
    for (;;) {
      card = JSON.parse((await api("GET", "/v1/models")).text).data[0];
      if (card.ready) break;
      $("server").textContent = `The model ${card.id} is loading; the page is ready once it is.`;
      await sleep(2000);
    }
    const labels = JSON.parse((await api("GET", "/v1/audio/labels")).text);
    state.englishOnly = /\.en$/.test(card.id);
    state.hasHead = labels.data.length > 0;
    $("server").textContent = `Model ${card.id}` + (state.hasHead
      ? `, sound tags from ${labels.head} (${labels.data.length} classes)` : ", no sound tags on this server");
    applyServerLimits();
  } catch (error) {
    $("server").textContent = "Not connected to the server.";
    showError(error);
  }
}

function applyServerLimits() {
  const translate = $("translate");
  if (state.englishOnly) {
    translate.checked = false;
    translate.disabled = true;
    $("translate-note").textContent = "The served model understands English only, so it cannot translate.";
    $("translate-note").hidden = false;
    for (const option of $("language").options) option.disabled = option.value !== "" && option.value !== "en";
  }
  if (!state.hasHead) {
    $("tags").checked = false;
    $("tags").disabled = true;
    $("tags-note").textContent = "This server has no tagging head: it gives transcripts only.";
    $("tags-note").hidden = false;
  }
}

function fillLanguages() {
  const select = $("language");
  for (const [code, name] of LANGUAGES) select.append(el("option", {value: code, text: name}));
}

// --- sources: a file or the microphone ---------------------------------------------------------

function useAudio(blob, name) {
  if (state.audioUrl) URL.revokeObjectURL(state.audioUrl);
  state.audio = {blob, name};
  state.audioUrl = URL.createObjectURL(blob);
  $("player").src = state.audioUrl;
  $("results").hidden = true;
  state.result = null;
  updateButtons();
}

function chooseFile(file) {
  if (!file) return;
  clearError();
  if (file.size === 0) {
    showError(new PageError(`The file ${file.name} is empty. Choose a recording that holds audio.`));
    return;
  }
  useAudio(file, file.name);
  TRANSPORTS.upload(file, file.name);
}

const recorder = {
  stream: null,
  media: null,
  chunks: [],
  started: 0,
  timer: null,
  get active() { return this.media !== null; },

  /** Start capturing; ``onChunk`` gets each piece of encoded audio as it arrives (about 4 a second). */
  async start(onChunk) {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia || typeof MediaRecorder === "undefined") {
      throw new PageError("This browser cannot record here. Recording needs a secure page: open it over HTTPS " +
                          "or on localhost, in a current browser.");
    }
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({audio: true});
    } catch (error) {
      if (error.name === "NotAllowedError") {
        throw new PageError("The browser was not allowed to use the microphone. Allow it for this page in the " +
                            "browser's site settings, then press Record again.");
      }
      if (error.name === "NotFoundError") {
        throw new PageError("No microphone was found. Connect one, then press Record again.");
      }
      throw new PageError(`The microphone could not be opened (${error.message}). Check it, then try again.`);
    }
    const mimeType = RECORDING_TYPES.find((type) => MediaRecorder.isTypeSupported(type));
    this.media = new MediaRecorder(this.stream, mimeType ? {mimeType} : {});
    this.chunks = [];
    this.media.ondataavailable = (event) => {
      if (event.data && event.data.size) {
        this.chunks.push(event.data);
        if (onChunk) onChunk(event.data);
      }
    };
    this.media.start(250);
    this.started = performance.now();
  },

  /** Stop capturing; resolves with the whole recording. */
  stop() {
    const media = this.media;
    return new Promise((resolve) => {
      media.onstop = () => {
        for (const track of this.stream.getTracks()) track.stop();
        const blob = new Blob(this.chunks, {type: media.mimeType || "audio/webm"});
        this.media = null;
        this.stream = null;
        resolve(blob);
      };
      media.stop();
    });
  },

  seconds() { return (performance.now() - this.started) / 1000; },
};

function recordingName(type) {
  const stamp = new Date().toISOString().replace(/[-:]/g, "").replace(/\..*/, "").replace("T", "-");
  const ext = type.includes("ogg") ? "ogg" : type.includes("mp4") ? "m4a" : "webm";
  return `recording-${stamp}.${ext}`;
}

async function toggleRecording() {
  const button = $("record");
  clearError();
  if (recorder.active) {
    clearInterval(recorder.timer);
    button.disabled = true;
    const blob = await recorder.stop();
    button.disabled = false;
    button.textContent = "Record from the microphone";
    button.setAttribute("aria-pressed", "false");
    $("record-state").textContent = "";
    if (!blob.size) {
      showError(new PageError("The recording is empty: the microphone sent no sound. Check it, then record again."));
      return;
    }
    const name = recordingName(blob.type);
    useAudio(blob, name);
    TRANSPORTS.upload(blob, name);
    return;
  }
  cancelJob();
  try {
    await recorder.start(null);  // a live transport would pass a function sending each chunk to the server
  } catch (error) {
    showError(error);
    return;
  }
  button.textContent = "Stop recording";
  button.setAttribute("aria-pressed", "true");
  $("record-state").textContent = "Recording: 0 s";
  recorder.timer = setInterval(() => {
    $("record-state").textContent = `Recording: ${Math.floor(recorder.seconds())} s`;
  }, 500);
}

// --- transports: how audio becomes a result ------------------------------------------------------

function optionFields() {
  const topK = Number($("topk").value);
  if (!Number.isInteger(topK) || topK < 1 || topK > 50) {
    $("topk").focus();
    throw new PageError("Sounds per time window must be a whole number from 1 to 50.");
  }
  const fields = {
    tags: $("tags").checked ? "true" : "false",
    top_k: String(topK),
    tag_resolution: $("resolution").value,
    speech_gate: $("gate").value,
  };
  if ($("language").value) fields.language = $("language").value;
  return fields;
}

function makeForm(request, format) {
  const form = new FormData();
  form.append("file", request.blob, request.name);
  form.append("response_format", format);
  for (const [name, value] of Object.entries(request.fields)) form.append(name, value);
  return form;
}

function cancelJob() {
  const job = state.job;
  if (!job) return;
  job.cancelled = true;
  if (job.xhr) job.xhr.abort();
}

/** Upload the whole recording or file; show progress while it travels and while the server works. */
async function uploadTransport(blob, name) {
  cancelJob();
  clearError();
  let request;
  try {
    const endpoint = $("translate").checked ? "/v1/audio/translations" : "/v1/audio/transcriptions";
    request = {blob, name, endpoint, fields: optionFields()};
  } catch (error) {
    showError(error);
    return;
  }
  const job = {xhr: null, cancelled: false};
  state.job = job;
  setBusy(true);
  const megabytes = (blob.size / 1e6).toFixed(1);
  let timer = null;
  setStatus(`Uploading ${name} (${megabytes} MB)…`, 0);
  const onUpload = (fraction) => {
    if (job.cancelled) return;
    if (fraction < 1) {
      setStatus(`Uploading ${name}: ${Math.round(fraction * 100)} % of ${megabytes} MB…`, fraction);
    } else if (!timer) {
      const started = performance.now();
      const length = isFinite($("player").duration) ? ` ${Math.round($("player").duration)} s of audio` : "";
      const verb = request.endpoint.endsWith("translations") ? "Translating" : "Transcribing";
      const tick = () => {
        if (state.keyPrompt) {
          setStatus("Waiting for the API key…");
          return;
        }
        const working = Math.round((performance.now() - started) / 1000);
        setStatus(`${verb}${length}… ${working} s so far.`, null);
      };
      tick();
      timer = setInterval(tick, 1000);
    }
  };
  try {
    const answer = await api("POST", request.endpoint, () => makeForm(request, "verbose_json"), job, onUpload);
    state.result = JSON.parse(answer.text);
    state.resultText = answer.text;
    state.request = request;
    render();
    const segments = state.result.segments.filter((s) => !s.no_speech).length;
    setStatus(`Done: ${segments} segment${segments === 1 ? "" : "s"} of speech in ${state.result.duration.toFixed(1)} s ` +
              "of audio.");
  } catch (error) {
    if (error instanceof Cancelled) setStatus("Cancelled.");
    else {
      setStatus("");
      showError(error);
    }
  } finally {
    clearInterval(timer);
    if (state.job === job) {
      state.job = null;
      setBusy(false);
    }
  }
}

const TRANSPORTS = {upload: uploadTransport};

function setBusy(busy) {
  state.busy = busy;
  $("cancel").hidden = !busy;
  $("status").setAttribute("aria-busy", String(busy));
  updateButtons();
}

function updateButtons() {
  $("run").disabled = state.busy || !state.audio;
  for (const button of document.querySelectorAll(".downloads button")) button.disabled = state.busy || !state.result;
}

// --- the result: summary, transcript, timeline -------------------------------------------------

function render() {
  const r = state.result;
  $("results").hidden = false;
  const task = r.task === "translate" ? "translated from" : "in";
  const language = r.language ? r.language[0].toUpperCase() + r.language.slice(1) : "an unknown language";
  const notes = (r.notes || []).length ? ` ${r.notes.join(" ")}` : "";
  $("summary").textContent = `${state.request.name}: ${r.duration.toFixed(1)} s ${task} ${language}` +
    (r.head ? `, sound tags every ${r.tag_resolution} s by ${r.head}.` : ".") + notes;
  renderTranscript(r);
  renderTimeline(r);
  syncPlayhead();
  const heading = $("results-heading").getBoundingClientRect();
  if (heading.top > window.innerHeight * 0.6) $("results-heading").scrollIntoView({block: "start"});
}

function soundCues(r) {
  // the service's sound events (not speech or silence) where the transcript does not cover them; of
  // events that overlap by more than half, the most probable one
  const spoken = r.segments.filter((s) => !s.no_speech);
  const chosen = [];
  const events = [...(r.events || [])].sort((a, b) => b.probability - a.probability);
  for (const e of events) {
    const length = e.end - e.start;
    const covered = spoken.reduce((sum, s) => sum + Math.max(0, Math.min(s.end, e.end) - Math.max(s.start, e.start)), 0);
    if (NOT_CUES.has(e.mid) || length <= 0 || covered / length >= CUE_MAX_SPEECH) continue;
    if (chosen.some((c) => Math.min(c.end, e.end) - Math.max(c.start, e.start) > length / 2)) continue;
    chosen.push(e);
  }
  return chosen.sort((a, b) => a.start - b.start)
    .map((e) => ({start: e.start, end: e.end, text: `[${cueName(e.name)}]`, kind: "cue"}));
}

function renderTranscript(r) {
  const list = $("segments");
  list.replaceChildren();
  const items = r.segments.map((s) => ({start: s.start, end: s.end, text: s.text.trim(),
                                        kind: s.no_speech ? "no-speech" : "speech", speech: s.speech_prob}))
    .concat(soundCues(r))
    .sort((a, b) => a.start - b.start || a.end - b.end);
  if (!items.length) {
    list.append(el("li", {class: "empty", text: "No speech was found in this audio."}));
    return;
  }
  for (const item of items) {
    const button = el("button", {type: "button", class: "seg", dataset: {start: item.start, end: item.end}},
                      el("span", {class: "time", text: `${clock(item.start)} – ${clock(item.end)}`}));
    if (item.kind === "cue") {
      button.append(el("span", {class: "text cue", text: item.text}));
    } else if (item.kind === "no-speech") {
      const why = item.speech === undefined || item.speech === null ? "" : ` (speech ${percent(item.speech)})`;
      button.append(el("span", {class: "badge", text: `no speech${why}`}),
                    el("span", {class: "text", text: item.text || "…"}));
      button.setAttribute("aria-label", `${clock(item.start)} to ${clock(item.end)}: probably not speech, left ` +
                          `out of the transcript${why}: ${item.text}`);
    } else {
      button.append(el("span", {class: "text", text: item.text}));
    }
    list.append(el("li", {class: `segment ${item.kind}`}, button));
  }
}

function niceStep(duration, ticks) {
  for (const step of [0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600]) {
    if (duration / step <= ticks) return step;
  }
  return 7200;
}

/** Time labels under the lanes, as many as fit the width (again whenever the width changes). */
function renderAxis() {
  const axis = $("axis");
  if (!axis || !state.result || !axis.clientWidth) return;
  const duration = state.result.duration;
  const fit = Math.max(1, Math.floor(axis.clientWidth / 64));
  if (axis.dataset.fit === String(fit) && axis.dataset.duration === String(duration)) return;
  axis.dataset.fit = String(fit);
  axis.dataset.duration = String(duration);
  const step = niceStep(duration, fit);
  axis.replaceChildren();
  for (let t = 0; t <= duration + 1e-6; t += step) {
    const tick = el("span", {class: "tick", text: clock(t).replace(/\.0$/, "")});
    tick.style.left = `${(t / duration) * 100}%`;
    if (t / duration > 0.94) tick.classList.add("end");
    axis.append(tick);
  }
}

function renderTimeline(r) {
  const box = $("timeline");
  const note = $("timeline-note");
  box.replaceChildren();
  state.lanes = [];
  const windows = r.tags || [];
  if (!windows.length) {
    box.hidden = true;
    note.hidden = false;
    note.textContent = state.request.fields.tags === "false" ? "Sound tags are off; turn them on to see this timeline."
      : (r.notes || []).join(" ") || "No sound tags for this audio.";
    return;
  }
  box.hidden = false;
  note.hidden = true;
  const duration = r.duration || windows[windows.length - 1].end;
  const totals = new Map();
  for (const w of windows) {
    for (const label of w.labels) {
      const entry = totals.get(label.mid) || {mid: label.mid, name: label.name, total: 0};
      entry.total += label.probability * (w.end - w.start);
      totals.set(label.mid, entry);
    }
  }
  const lanes = [...totals.values()].sort((a, b) => b.total - a.total).slice(0, MAX_LANES);
  box.setAttribute("role", "group");
  box.setAttribute("aria-label", `The ${lanes.length} most present sounds over time. Arrow keys move between ` +
                   "time windows; Enter plays from there.");
  const names = el("div", {class: "names", "aria-hidden": "true"});
  const tracks = el("div", {class: "tracks"});
  lanes.forEach((lane, laneIndex) => {
    names.append(el("div", {class: "lane-name", title: lane.name, text: cueName(lane.name)}));
    const track = el("div", {class: `track hue-${laneIndex}`, role: "group", "aria-label": cueName(lane.name),
                             dataset: {mid: lane.mid, name: lane.name}});
    const cells = [];
    for (const w of windows) {
      const label = w.labels.find((l) => l.mid === lane.mid);
      if (!label) continue;
      const cell = el("div", {class: "cell", role: "button", tabindex: "-1",
                              "aria-label": `${cueName(lane.name)}, ${clock(w.start)} to ${clock(w.end)}: ` +
                                            `${percent(label.probability)}`,
                              dataset: {start: w.start, end: w.end, probability: label.probability,
                                        lane: laneIndex, name: lane.name}});
      cell.style.left = `${(w.start / duration) * 100}%`;
      cell.style.width = `${((w.end - w.start) / duration) * 100}%`;
      cell.style.setProperty("--p", (0.1 + 0.9 * label.probability).toFixed(3));
      track.append(cell);
      cells.push(cell);
    }
    tracks.append(track);
    state.lanes.push(cells);
  });
  tracks.append(el("div", {class: "axis", id: "axis", "aria-hidden": "true"}),
                el("div", {class: "playhead", id: "playhead", "aria-hidden": "true"}));
  names.append(el("div", {class: "axis-spacer"}));
  box.append(names, tracks);
  renderAxis();
  const first = state.lanes.find((cells) => cells.length);
  if (first) first[0].tabIndex = 0;
}

// --- the player, the transcript and the timeline, kept together --------------------------------

function seek(seconds) {
  const player = $("player");
  player.currentTime = seconds;
  syncPlayhead();
  const playing = player.play();
  if (playing) {
    playing.catch((error) => {
      if (error.name === "NotAllowedError") setStatus("Press play on the player to listen from there.");
    });
  }
}

function syncPlayhead() {
  const r = state.result;
  const playhead = $("playhead");
  if (!r) return;
  const player = $("player");
  const t = player.currentTime || 0;
  const started = t > 0 || !player.paused;  // before that, no line is "now"
  if (playhead) playhead.style.left = `${Math.min(1, t / (r.duration || 1)) * 100}%`;
  for (const button of document.querySelectorAll("#segments .seg")) {
    const inside = started && t >= Number(button.dataset.start) && t < Number(button.dataset.end);
    button.classList.toggle("current", inside);
    if (inside) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }
}

function followPlayback() {
  syncPlayhead();
  if (!$("player").paused) requestAnimationFrame(followPlayback);
}

function showTooltip(cell) {
  const tip = $("tooltip");
  const p = Number(cell.dataset.probability);
  tip.textContent = `${cell.dataset.name} · ${clock(Number(cell.dataset.start))}–${clock(Number(cell.dataset.end))}` +
                    ` · ${percent(p)}`;
  tip.hidden = false;
  const host = tip.offsetParent || document.body;
  const box = cell.getBoundingClientRect();
  const origin = host.getBoundingClientRect();
  const left = Math.min(box.left - origin.left, origin.width - tip.offsetWidth);
  tip.style.left = `${Math.max(0, left)}px`;
  tip.style.top = `${box.bottom - origin.top + 4}px`;
}

function hideTooltip() {
  $("tooltip").hidden = true;
}

function moveFocus(cell, event) {
  const laneIndex = Number(cell.dataset.lane);
  const cells = state.lanes[laneIndex];
  const index = cells.indexOf(cell);
  let target = null;
  if (event.key === "ArrowRight") target = cells[index + 1];
  else if (event.key === "ArrowLeft") target = cells[index - 1];
  else if (event.key === "Home") target = cells[0];
  else if (event.key === "End") target = cells[cells.length - 1];
  else if (event.key === "ArrowUp" || event.key === "ArrowDown") {
    const step = event.key === "ArrowUp" ? -1 : 1;
    const start = Number(cell.dataset.start);
    for (let lane = laneIndex + step; lane >= 0 && lane < state.lanes.length; lane += step) {
      if (!state.lanes[lane].length) continue;
      target = state.lanes[lane].reduce((best, c) =>
        Math.abs(Number(c.dataset.start) - start) < Math.abs(Number(best.dataset.start) - start) ? c : best);
      break;
    }
  } else if (event.key === "Enter" || event.key === " ") {
    event.preventDefault();
    seek(Number(cell.dataset.start));
    return;
  } else {
    return;
  }
  event.preventDefault();
  if (!target) return;
  cell.tabIndex = -1;
  target.tabIndex = 0;
  target.focus();
}

// --- downloads -----------------------------------------------------------------------------------

function saveFile(text, name, type) {
  const url = URL.createObjectURL(new Blob([text], {type}));
  const link = el("a", {href: url, download: name});
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

async function download(format) {
  const request = state.request;
  if (!request || state.busy) return;
  const [ext, type] = DOWNLOADS[format];
  const name = `${baseName(request.name)}.${ext}`;
  clearError();
  if (format === "verbose_json") {
    saveFile(state.resultText, name, type);
    setStatus(`Saved ${name}.`);
    return;
  }
  const job = {xhr: null, cancelled: false};
  state.job = job;
  setBusy(true);
  setStatus(`Preparing ${name}…`, null);
  try {
    const answer = await api("POST", request.endpoint, () => makeForm(request, format), job);
    saveFile(answer.text, name, type);
    setStatus(`Saved ${name}.`);
  } catch (error) {
    if (error instanceof Cancelled) setStatus("Cancelled.");
    else {
      setStatus("");
      showError(error);
    }
  } finally {
    if (state.job === job) {
      state.job = null;
      setBusy(false);
    }
  }
}

// --- wiring --------------------------------------------------------------------------------------

function wire() {
  fillLanguages();
  const drop = $("drop");
  $("file").addEventListener("change", (event) => {
    chooseFile(event.target.files[0]);
    event.target.value = "";  // choosing the same file again runs it again
  });
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const name of ["dragleave", "drop"]) drop.addEventListener(name, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    chooseFile(event.dataTransfer.files[0]);
  });
  // A file dropped next to the zone should not replace the page.
  for (const name of ["dragover", "drop"]) document.addEventListener(name, (event) => event.preventDefault());

  $("record").addEventListener("click", toggleRecording);
  $("options").addEventListener("submit", (event) => {
    event.preventDefault();
    if (state.audio) TRANSPORTS.upload(state.audio.blob, state.audio.name);
  });
  $("cancel").addEventListener("click", cancelJob);
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key").value.trim();
    if (key) answerKeyPrompt(key);
  });
  $("key-cancel").addEventListener("click", () => answerKeyPrompt(null));

  $("segments").addEventListener("click", (event) => {
    const button = event.target.closest(".seg");
    if (button) seek(Number(button.dataset.start));
  });
  const timeline = $("timeline");
  timeline.addEventListener("click", (event) => {
    const cell = event.target.closest(".cell");
    if (cell) {
      seek(Number(cell.dataset.start));
      return;
    }
    const track = event.target.closest(".track");
    if (track && state.result) {
      const box = track.getBoundingClientRect();
      seek(((event.clientX - box.left) / box.width) * state.result.duration);
    }
  });
  timeline.addEventListener("keydown", (event) => {
    const cell = event.target.closest(".cell");
    if (cell) moveFocus(cell, event);
  });
  for (const name of ["mouseover", "focusin"]) {
    timeline.addEventListener(name, (event) => {
      const cell = event.target.closest(".cell");
      if (cell) showTooltip(cell);
    });
  }
  timeline.addEventListener("mouseleave", hideTooltip);
  timeline.addEventListener("focusout", hideTooltip);

  const player = $("player");
  player.addEventListener("timeupdate", syncPlayhead);
  player.addEventListener("seeked", syncPlayhead);
  player.addEventListener("play", () => requestAnimationFrame(followPlayback));
  for (const button of document.querySelectorAll(".downloads button")) {
    button.addEventListener("click", () => download(button.dataset.format));
  }
  // time labels follow the timeline's width (a phone turned, a window resized)
  new ResizeObserver(() => renderAxis()).observe($("timeline"));
  updateButtons();
  connect();
}

document.addEventListener("DOMContentLoaded", wire);
