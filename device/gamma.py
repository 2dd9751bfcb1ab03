"""The camera's encoding gamma: linear light = (level / 255) ** GAMMA.

One constant for everything that reasons in light rather than in 8-bit levels: calibration's
exposure search and board colour, the simulated camera, relighting photos, the scene renderer
and training's exposure augmentation.
"""

GAMMA = 2.2
