"""Scenes rendered from photos: a photo's item put on one board under one light
(:mod:`device.scenes.relight`), the stage a scene is filmed on (:mod:`device.scenes.stage`), the
camera that films it with a real camera's nuisances (:mod:`device.scenes.filming`) and the video
of items dropped on it (:mod:`device.scenes.render`).
Shared by the demo, the bench, evaluation under relighting and training's augmentation."""
