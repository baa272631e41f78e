"""What a classifier's probabilities are worth: ranking curves, calibration, the threshold.

Kept light (no TensorFlow import): `trainer.models` imports the calibration layer from here.
"""
