"""The SeaweedFS event bridge: filer change events (protobuf) -> S3 ObjectCreated notifications."""
