"""Technician calibration (``waste-sorter calibrate``): exposure search, empty-board reference,
gate thresholds, drift check, atomic storage with history and rollback.

Modules: ``cli`` (the command), ``exposure`` (search and white balance), ``reference`` (median
board, gate thresholds, drift), ``store`` (file schema, loading, saving, rollback), ``atomic``
(crash-safe writes), ``report`` (histogram PNG), ``reload`` (systemctl), ``simcam`` (simulated
camera). The sorter loads a calibration with :func:`calibration.store.load_with_board`.
"""
