################################################################################
#
# foo-gui
#
################################################################################

# foo-gui: built against libfoo (its per-package target dir links libfoo's files).
FOO_GUI_DEPENDENCIES = libfoo
