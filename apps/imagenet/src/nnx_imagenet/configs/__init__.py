"""Per-method configs (`get_config(arg)` with presets, each with a CPU `smoke` preset).

Load them with `nnx-imagenet train --config=NAME[:preset]` or `config_loading.load_config`.
"""
