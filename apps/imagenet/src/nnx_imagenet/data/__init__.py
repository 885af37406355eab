"""Grain data pipelines: ImageFolder trees, SD-VAE latent shards, TFDS, and the bundled digits.

Import from the submodules: `adm_crop`, `image_folder`, `latent_shards`, `tfds_source`, `digits`,
`pipeline`.
"""
