"""The embedded synthetic demo checkpoint (not for clinical use)."""
