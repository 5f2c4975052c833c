################################################################################
#
# htop
#
################################################################################

# htop: one option of its own, which changes what it installs.
define HTOP_BUILD_CMDS
	$(Q)echo "unicode=$(if $(BR2_PACKAGE_HTOP_UNICODE),yes,no)" > $(@D)/htoprc
endef

define HTOP_INSTALL_TARGET_CMDS
	$(Q)mkdir -p $(call pkg_target_dir,htop)/etc
	$(Q)cp $(@D)/htoprc $(call pkg_target_dir,htop)/etc/htoprc
endef
