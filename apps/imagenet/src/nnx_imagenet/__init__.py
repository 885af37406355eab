"""The ImageNet training app: configs, grain data pipeline, CLI and an offline digits demo."""

__version__ = "0.3.0"
