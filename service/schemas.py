"""Pydantic models at the HTTP boundary: the form fields requests carry and the JSON responses return."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from whisper.tokenizer import LANGUAGES, TO_LANGUAGE_CODE

from tagger import Segment, SoundEvent, TagLabel, TagResult, TagWindow, TranscriptionResult

from .errors import bad_request

TranscriptFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]
TagsFormat = Literal["json", "text", "srt", "vtt", "tsv"]
Granularity = Literal["segment", "word"]

DEFAULT_TAG_RESOLUTION = 10.0


# --- requests (multipart form fields; the file travels beside them) ---------------------------


def language_code(value: object) -> object:
    """A language as Whisper's code: a code or an English name, any case (other types pass through)."""
    if not isinstance(value, str):
        return value
    key = value.strip().lower()
    if key in LANGUAGES:
        return key
    if key in TO_LANGUAGE_CODE:
        return TO_LANGUAGE_CODE[key]
    raise ValueError(f"unknown language {value!r}; use an ISO-639-1 code such as en, de, fr")


def fallback_temperatures(temperature: float) -> tuple[float, ...]:
    """OpenAI's ``temperature=0`` means Whisper's fallback schedule; ``t`` means t, t + 0.2, ... up to 1."""
    steps = round((1.0 - temperature) / 0.2)
    return tuple(round(min(1.0, temperature + 0.2 * i), 3) for i in range(steps + 1))


class FormModel(BaseModel):
    """Form fields arrive as strings; unknown fields are ignored, as OpenAI clients send extras."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())
    LIST_FIELDS: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def from_fields(cls, fields: dict[str, list[str]]):
        """Validate raw form values. ``name`` and ``name[]`` both count; a list field takes every
        value, a plain field the last one; empty values mean "not given". Errors become 400."""
        data: dict[str, Any] = {}
        for name in cls.model_fields:
            values = [v for v in fields.get(name, []) + fields.get(name + "[]", []) if v.strip()]
            if values:
                data[name] = values if name in cls.LIST_FIELDS else values[-1]
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            first = error.errors()[0]
            param = str(first["loc"][0]) if first.get("loc") else None
            message = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
            raise bad_request(f"invalid form field {message}", "invalid_value", param) from None


class TagOptions(FormModel):
    """How tags are chosen and over which time windows."""

    top_k: int | None = Field(5, ge=1, description="labels per time window, most probable first; 'all' for every class")
    threshold: float | None = Field(None, ge=0, le=1, description="only labels at least this probable")
    tag_resolution: float = Field(DEFAULT_TAG_RESOLUTION, gt=0, le=3600, allow_inf_nan=False,
                                  description="seconds per tag window, a multiple of 0.4")
    audio_track: int | None = Field(None, ge=1, le=1000, description="which audio track of a file with several, "
                                    "counted from 1; unset: the first with sound (notes say which was used)")

    @field_validator("top_k", mode="before")
    @classmethod
    def _all_means_none(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip().lower() in ("all", "none") else value


class TranscriptionForm(TagOptions):
    """OpenAI's transcription fields plus Earmark's tag fields."""

    LIST_FIELDS: ClassVar[frozenset[str]] = frozenset({"timestamp_granularities"})

    model: str = Field("whisper-1", description="accepted and ignored: the served model answers")
    language: str | None = Field(None, description="spoken language (ISO-639-1 code or English name); unset: detect")
    prompt: str | None = Field(None, max_length=4000, description="text to condition the first window on")
    temperature: float = Field(0.0, ge=0, le=1, allow_inf_nan=False,
                               description="0: greedy with Whisper's fallback to higher temperatures")
    response_format: TranscriptFormat = "json"
    timestamp_granularities: list[Granularity] = Field(default_factory=lambda: ["segment"],
                                                       description="segment and/or word (word: verbose_json words)")
    tags: bool | None = Field(None, description="sound tags in verbose_json (and cues in srt/vtt); default: when a head is loaded")
    multilingual: bool = Field(False, description="detect the language of every window (a recording that switches language)")
    condition_on_previous_text: bool = Field(False, description="prompt each window with the text so far, decoding "
                                             "windows one after another (default: in batches, without that prompt)")
    speech_gate: float | None = Field(0.5, ge=0, le=1, description="segments whose speech probability is below this "
                                      "are flagged no_speech and left out of the text; 'none' keeps all")
    stream: bool = Field(False, description="true: server-sent events as each window finishes (transcript.text.delta, "
                         "transcript.tags, transcript.text.done) instead of one answer")

    @field_validator("speech_gate", mode="before")
    @classmethod
    def _none_means_off(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip().lower() in ("none", "off") else value

    @field_validator("language", mode="before")
    @classmethod
    def _language_code(cls, value: object) -> object:
        return language_code(value)

    @property
    def temperatures(self) -> tuple[float, ...]:
        return fallback_temperatures(self.temperature)

    @property
    def word_timestamps(self) -> bool:
        return "word" in self.timestamp_granularities


class TagsForm(TagOptions):
    """``POST /v1/audio/tags``: tags only, the decoder never runs."""

    LIST_FIELDS: ClassVar[frozenset[str]] = frozenset({"include", "exclude"})

    model: str = Field("whisper-1", description="accepted and ignored")
    include: list[str] = Field(default_factory=list, description="only these classes (mid or name); repeat the field")
    exclude: list[str] = Field(default_factory=list, description="never these classes (mid or name); repeat the field")
    response_format: TagsFormat = "json"


def multipart_schema(form: type[FormModel]) -> dict[str, Any]:
    """OpenAPI request body for a form model plus the uploaded ``file`` (the body is parsed by hand)."""
    schema = form.model_json_schema()
    schema["properties"] = {"file": {"type": "string", "format": "binary", "description": "the audio or video"},
                            **schema.get("properties", {})}
    schema["required"] = ["file"]
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


# --- responses --------------------------------------------------------------------------------


class TagLabelOut(BaseModel):
    index: int
    mid: str
    name: str
    probability: float

    @classmethod
    def of(cls, label: TagLabel) -> TagLabelOut:
        return cls(index=label.index, mid=label.mid, name=label.name, probability=round(label.probability, 6))


class TagWindowOut(BaseModel):
    start: float
    end: float
    labels: list[TagLabelOut]

    @classmethod
    def of(cls, window: TagWindow) -> TagWindowOut:
        return cls(start=window.start, end=window.end, labels=[TagLabelOut.of(label) for label in window.labels])


class SoundEventOut(BaseModel):
    index: int
    mid: str
    name: str
    start: float
    end: float
    probability: float

    @classmethod
    def of(cls, event: SoundEvent) -> SoundEventOut:
        return cls(**event.to_dict())


class TranscriptionJson(BaseModel):
    text: str


class WordOut(BaseModel):
    word: str
    start: float
    end: float
    probability: float


class SegmentOut(BaseModel):
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    language: str | None = None
    no_speech: bool = False
    speech_prob: float | None = None
    tags: list[TagLabelOut] = Field(default_factory=list)

    @classmethod
    def of(cls, segment: Segment) -> SegmentOut:
        return cls(
            id=segment.id, seek=segment.seek, start=segment.start, end=segment.end,
            text=segment.text, tokens=list(segment.tokens), temperature=segment.temperature,
            avg_logprob=segment.avg_logprob, compression_ratio=segment.compression_ratio,
            no_speech_prob=segment.no_speech_prob, language=segment.language, no_speech=segment.no_speech,
            speech_prob=None if segment.speech_prob is None else round(segment.speech_prob, 4),
            tags=[TagLabelOut.of(label) for label in segment.tags],
        )


class VerboseTranscription(BaseModel):
    """OpenAI's verbose_json plus ``tags`` (time windows) and ``tags`` on every segment."""

    task: Literal["transcribe", "translate"]
    language: str  # the language's English name, as OpenAI writes it ("english")
    duration: float
    text: str
    segments: list[SegmentOut]
    words: list[WordOut] | None = None  # only when word granularity was asked for
    tags: list[TagWindowOut]
    events: list[SoundEventOut] = Field(default_factory=list)  # sounds from start to end
    tag_resolution: float
    head: str | None
    notes: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, result: TranscriptionResult, with_words: bool) -> VerboseTranscription:
        words = None
        if with_words:
            words = [WordOut(word=w.word, start=w.start, end=w.end, probability=round(w.probability, 6))
                     for s in result.segments for w in (s.words or [])]
        return cls(
            task=result.task, language=LANGUAGES.get(result.language, result.language), duration=result.duration,
            text=result.text, segments=[SegmentOut.of(s) for s in result.segments], words=words,
            tags=[TagWindowOut.of(w) for w in result.tags], events=[SoundEventOut.of(e) for e in result.events],
            tag_resolution=result.tag_resolution, head=result.head, notes=list(result.notes),
        )


class TagsResponse(BaseModel):
    duration: float
    tag_resolution: float
    head: str | None
    tags: list[TagWindowOut]
    events: list[SoundEventOut] = Field(default_factory=list)  # sounds from start to end
    notes: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, result: TagResult) -> TagsResponse:
        return cls(duration=result.duration, tag_resolution=result.tag_resolution, head=result.head,
                   tags=[TagWindowOut.of(w) for w in result.tags], events=[SoundEventOut.of(e) for e in result.events],
                   notes=list(result.notes))


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "earmark"
    ready: bool
    head: str | None = None
    weights_sha256: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class LabelOut(BaseModel):
    index: int
    mid: str
    name: str


class LabelList(BaseModel):
    object: Literal["list"] = "list"
    label_set: str | None
    head: str | None
    data: list[LabelOut]


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    model: str
    head: str | None
    device: str


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str


class ErrorBody(BaseModel):
    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "bad request: empty audio, invalid field"), (401, "missing or wrong API key"),
        (413, "upload or audio too long"), (415, "undecodable media"),
        (503, "model loading or queue full (Retry-After)"), (504, "request deadline passed"),
    )
}
