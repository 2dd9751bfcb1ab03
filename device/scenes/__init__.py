"""Scenes rendered from photos: one board under one light (:mod:`device.scenes.relight`) and
the video of items dropped on it with a camera's nuisances (:mod:`device.scenes.render`).
Shared by the demo, the bench, evaluation under relighting and training's augmentation."""
