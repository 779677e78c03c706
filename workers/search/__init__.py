"""The query side: search the segments table (CLI ``capstream search``, HTTP ``capstream serve``)."""
