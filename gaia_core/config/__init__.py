"""Build file loading: imports, deep merge, --set overrides, workspace, validation."""
