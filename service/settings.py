"""Service configuration: every setting is an ``EARMARK_*`` environment variable."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def comma_list(value: object) -> object:
    """``"a, b,c"`` -> ``["a", "b", "c"]``; lists pass through; empty items are dropped."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Read once when the app is created. Sizes are in MB (10^6 bytes), times in seconds."""

    model_config = SettingsConfigDict(env_prefix="EARMARK_", protected_namespaces=(), extra="ignore")

    # The model
    model: str = Field("base", description="Whisper model: a name (tiny.en, base, ...), a .pt checkpoint or a CTranslate2 directory")
    head: str | None = Field("auto", description="tagging head: auto (the model's bundled head, if any), default, "
                                                 "a checkpoint path, an official Whisper-AT .pth, or none")
    device: str | None = Field(None, description="cpu, cuda, cuda:1 ... (unset: cuda when available)")
    threads: int | None = Field(None, ge=1, description="torch CPU threads for inference (unset: torch's default)")
    load_delay: float = Field(0.0, ge=0, description="seconds to wait before loading the model (testing readiness only)")
    warmup: bool = Field(True, description="run one second of silence through the model before reporting ready")

    # Batching and back-pressure
    max_batch_size: int | None = Field(None, ge=1, le=256, description="windows per encoder call, across requests; "
                                       "1 switches micro-batching off; unset (or auto): 8 on a GPU, 1 on a CPU, where "
                                       "batching was measured to lower throughput")
    max_wait_ms: float = Field(10.0, ge=0, le=10_000, description="how long a batch waits for windows of other requests")
    queue_size: int = Field(64, ge=1, description="requests admitted and waiting for the model; beyond that: 503")
    decode_threads: int = Field(2, ge=1, le=64, description="threads that decode uploads and plan their windows")
    decode_batch_size: int = Field(16, ge=1, le=256, description="windows per text-decoder call, across requests")
    compute_type: str = Field("default", description="the text decoder's CTranslate2 compute type: default (int8 on "
                              "CPU, float16 on GPU), int8, int8_float16, float16, bfloat16, float32, ...; on a CPU "
                              "an int8 type runs the tagging head's linear layers in int8 too")
    request_timeout: float = Field(1800.0, gt=0, description="per-request deadline in seconds, upload excluded (504 past it)")

    # Limits
    max_upload_mb: float = Field(100.0, gt=0, description="largest request body in MB (413 beyond, checked while it streams in)")
    max_duration: float | None = Field(7200.0, gt=0, description="longest audio in seconds (413 beyond); unset: no limit")
    max_audio_held: float = Field(14400.0, gt=0, description="seconds of decoded audio all requests together hold "
                                  "in memory (64 kB a second); a request that would pass it gets 503")

    # Slow and greedy clients
    idle_timeout: float = Field(30.0, gt=0, description="seconds a client may take to send its request headers, and "
                                "the longest pause inside an upload (408 past it)")
    min_upload_rate: float = Field(10.0, ge=0, description="kB/s (10^3 bytes) an upload must average once it has run "
                                   "for idle_timeout (408 below it); 0: no minimum")
    max_uploads: int = Field(64, ge=1, description="request bodies being received at once; beyond that: 503")
    max_buffered_mb: float = Field(400.0, gt=0, description="MB of request bodies held in memory at once, all "
                                   "requests together (at least max_upload_mb); beyond that: 503")
    max_connections_per_client: int | None = Field(None, ge=1, description="open connections from one client address "
                                                   "(earmark serve); beyond that the connection gets 503 and is "
                                                   "closed; unset: no cap")

    # Live streams (WebSocket /v1/audio/stream)
    max_streams: int = Field(8, ge=0, description="streams open at once; one more is refused (close code 1013)")
    stream_idle_timeout: float = Field(30.0, gt=0, description="seconds a stream may send nothing before it is closed")
    max_stream_duration: float = Field(4 * 3600.0, gt=0, description="seconds of audio one stream may send")
    max_frame_kb: float = Field(1024.0, gt=0, description="largest message a stream may send, in kB (10^3 bytes)")
    partial_interval: float = Field(1.0, ge=0.1, description="seconds of new audio between a stream's partial texts")

    # Security
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list, repr=False, description="comma-separated bearer keys; empty: no auth")
    public_health: bool = Field(True, description="/healthz and /readyz answer without an API key")
    public_metrics: bool = Field(True, description="/metrics answers without an API key")
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list, description="comma-separated allowed origins, or *")

    # Server and logs
    host: str = Field("127.0.0.1", description="address `earmark serve` listens on")
    port: int = Field(8000, ge=0, le=65535, description="port `earmark serve` listens on")
    log_level: str = Field("info", description="debug, info, warning, error")

    _split_lists = field_validator("api_keys", "cors_origins", mode="before")(comma_list)

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in ("debug", "info", "warning", "error", "critical"):
            raise ValueError("log_level must be debug, info, warning, error or critical")
        return value

    @field_validator("head", "device", "threads", "max_duration", "max_connections_per_client", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip().lower() in ("", "none") else value

    @field_validator("max_batch_size", mode="before")
    @classmethod
    def _auto_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip().lower() in ("", "none", "auto") else value

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1_000_000)

    @property
    def max_frame_bytes(self) -> int:
        return int(self.max_frame_kb * 1000)

    @property
    def max_buffered_bytes(self) -> int:
        return int(max(self.max_buffered_mb, self.max_upload_mb) * 1_000_000)
