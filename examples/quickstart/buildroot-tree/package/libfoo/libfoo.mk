################################################################################
#
# libfoo
#
################################################################################

# libfoo: a library other packages depend on.
define LIBFOO_INSTALL_TARGET_CMDS
	$(Q)mkdir -p $(call pkg_target_dir,libfoo)/usr/lib
	$(Q)printf 'libfoo %s\n' $(call pkg_version,libfoo) > $(call pkg_target_dir,libfoo)/usr/lib/libfoo.so
endef
