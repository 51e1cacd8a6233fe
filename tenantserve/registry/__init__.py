"""The model registry: immutable model versions, their artifacts, lifecycle and resolution."""
