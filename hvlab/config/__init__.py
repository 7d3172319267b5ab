"""Configuration: YAML with file:line:col marks, a typed reader, the model."""
