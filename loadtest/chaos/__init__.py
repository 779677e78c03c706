"""Chaos suite: kill workers while they hold work, restart or wipe Redis, kill the broker, replay
records, and measure what that cost against ground truth (``python -m loadtest.chaos``).

``workload`` makes the media and knows each file's segments from how it was made; ``processes``
runs and scrapes the workers; ``faults`` kills, restarts and replays; ``collect`` reads back
topics, index and result view; ``verifier`` (pure data) counts lost, duplicate outputs, redone
work and boundary errors and checks them against what the kills allow; ``run`` wires it up.
"""
