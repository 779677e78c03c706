"""The ``capstream`` command line."""
