"""The embedded ``shapes`` model: a tiny Stable Diffusion (same component classes) trained by sdkit itself on a
synthetic world of coloured shapes and stick figures, so everything in sdkit runs offline on a laptop CPU.

- ``world``: scenes, rendering, depth maps, OpenPose keypoints; ``captions``: the prompt grammar
- ``architecture``: the tiny component configs; ``train``: the three training stages; ``export``: the
  diffusers-format folder; ``evaluate``: does an image show what its prompt asked for?
- ``rgb_factors``: the VAE's linear latent -> RGB preview factors, fitted on world scenes

Importing this package does no work.
"""
