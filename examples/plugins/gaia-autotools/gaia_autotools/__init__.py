"""gaia-autotools: any autoconf/automake project as a checkpointable [autotools] build."""
