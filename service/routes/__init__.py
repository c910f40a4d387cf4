"""HTTP routes, one module per API area: transcriptions, tags, models (+ labels), health (+ metrics)."""
