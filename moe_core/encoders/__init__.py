"""Modality encoders, each projecting to the shared width d_h (paper eqs. 6-8)."""
