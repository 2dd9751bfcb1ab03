"""The calibration file: what the sorter reads at start and on SIGHUP, and what ``waste-sorter
calibrate`` (the technician's tool, :mod:`calibration`) writes. The format belongs to the
runtime: :mod:`~device.calibration_file.schema` (the values and their strict parser) and
:mod:`~device.calibration_file.store` (loading, atomic saving, history and rollback).
"""
