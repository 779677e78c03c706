"""The parts of ``python -m loadtest.run``: ``workload`` (fresh media), ``workers`` (one process
per worker), ``sampler`` (``/metrics`` and psutil every second), ``feed`` (uploads at a rate,
waits until indexed), ``figures`` (the numbers), ``plots`` and ``report`` (what is written)."""
