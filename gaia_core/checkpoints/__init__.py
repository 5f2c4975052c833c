"""Build checkpoints: fingerprint an anchor's inputs, capture its output, restore it later."""
