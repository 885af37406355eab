"""The offline digits demo: a held-out digits classifier, the quality report and the PNG plots."""
