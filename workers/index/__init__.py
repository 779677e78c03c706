"""The index stage: embeddings (and removals) -> a LanceDB table that search reads."""
