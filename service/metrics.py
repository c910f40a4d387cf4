"""Prometheus metrics, all named ``earmark_*``, in a registry of the app's own (not the global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
RTF_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("earmark_requests", "HTTP requests answered, by route template, method and status",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("earmark_request_duration_seconds", "HTTP request latency, upload included",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.audio_seconds = Counter("earmark_audio_seconds", "seconds of audio processed, by task", ["task"], registry=r)
        self.real_time_factor = Histogram("earmark_real_time_factor",
                                          "processing time / audio duration per request (decode + queue + model)",
                                          ["task"], buckets=RTF_BUCKETS, registry=r)
        self.queue_depth = Gauge("earmark_queue_depth", "requests admitted and waiting for the model", registry=r)
        self.active_jobs = Gauge("earmark_active_jobs", "requests the batching worker is working on", registry=r)
        self.batch_windows = Histogram("earmark_batch_windows", "windows per encoder call (micro-batch size)",
                                       buckets=BATCH_BUCKETS, registry=r)
        self.batch_requests = Histogram("earmark_batch_requests", "distinct requests per encoder call",
                                        buckets=BATCH_BUCKETS, registry=r)
        self.encoder_seconds = Histogram("earmark_encoder_seconds", "time of one batched encoder call",
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.decoder_windows = Histogram("earmark_decoder_windows", "windows per text-decoder round, across requests",
                                         buckets=BATCH_BUCKETS, registry=r)
        self.decoder_seconds = Histogram("earmark_decoder_seconds", "time of one text-decoder round",
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.rejected = Counter("earmark_rejected", "requests refused before reaching the model, by reason",
                                ["reason"], registry=r)
        self.dropped = Counter("earmark_dropped", "queued work dropped, by reason (disconnect, deadline)",
                               ["reason"], registry=r)
        self.streams_open = Gauge("earmark_streams_open", "live streams open (WebSocket /v1/audio/stream)", registry=r)
        self.stream_audio_seconds = Counter("earmark_stream_audio_seconds", "seconds of audio received by live streams",
                                            registry=r)
        self.stream_partial_latency = Histogram("earmark_stream_partial_latency_seconds",
                                                "from the arrival of a partial's last audio to the partial being sent",
                                                buckets=LATENCY_BUCKETS, registry=r)
        self.stream_final_latency = Histogram("earmark_stream_final_latency_seconds",
                                              "from the arrival of a final segment's last audio to the segment being sent",
                                              buckets=LATENCY_BUCKETS, registry=r)
        self.model_ready = Gauge("earmark_model_ready", "1 once the model (and head) are loaded", registry=r)
