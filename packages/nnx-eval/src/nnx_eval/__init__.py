"""FID/IS/sFID/precision-recall/FD-DINOv2, reference statistics and a sharded sampling loop."""

__version__ = "0.1.0"
