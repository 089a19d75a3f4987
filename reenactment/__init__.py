"""Faces, landmarks, mapping network and the reenactment pipeline: not implemented yet (issues 3 and 5)."""
