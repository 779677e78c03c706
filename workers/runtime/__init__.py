"""The runtime every stage shares: consumer loop, Kafka plumbing, errors, logging."""
