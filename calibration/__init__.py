"""Technician calibration (``waste-sorter calibrate``): exposure search, empty-board reference,
gate thresholds, drift check, atomic storage with history and rollback.

Modules: ``cli`` (the command), ``exposure`` (search and white balance), ``reference`` (median
board, gate thresholds, drift), ``schema`` (the calibration file's schema and strict parser),
``store`` (loading, atomic saving with history, rollback), ``report`` (histogram PNG),
``reload`` (systemctl), ``simcam`` (simulated camera); crash-safe writes are
:mod:`device.atomic`. The sorter loads a calibration with :func:`calibration.store.load_with_board`.
"""
