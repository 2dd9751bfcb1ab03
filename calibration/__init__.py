"""The technician's tool (``waste-sorter calibrate``): exposure search, empty-board reference,
gate thresholds, drift check. It writes the calibration file, whose format belongs to the
runtime (:mod:`device.calibration_file`: schema, loading, atomic saving with history, rollback).

Modules: ``cli`` (the command), ``exposure`` (search and white balance), ``reference`` (median
board, gate thresholds, drift), ``report`` (histogram PNG), ``reload`` (systemctl reload of the
sorter). The simulated camera (``--source sim``) is the runtime's (:mod:`device.camera.sim`).
"""
