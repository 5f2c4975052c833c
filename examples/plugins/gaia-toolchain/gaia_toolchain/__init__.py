"""Example gaia plugin: build a toolchain directory once, checkpoint it, restore it later."""
