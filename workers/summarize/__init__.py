"""Summaries and chapters per object: when an object is done, its timed captions, transcripts
and pages (read back from the index) go to the caption model (Qwen3-VL, text only) in windows
that fit its context; it writes a summary and chapters under a JSON schema whose times cannot
leave the window, and the result is one row of the ``objects`` table (``workers.index.objects``)."""
