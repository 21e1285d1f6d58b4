"""What the user asked for: the spec document (its sections as pydantic models, loaded from YAML
with ``--set`` overrides, checked before anything starts) and the space language it samples.

May import: ``tuner.core``, and ``tuner.trainables`` for the options each trainable takes.
"""
