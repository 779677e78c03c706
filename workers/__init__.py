"""capstream workers: the shared runtime and the decode, caption and embed stages."""
