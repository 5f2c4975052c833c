"""gaia-toolchain: a checkpointable [toolchain] build."""
