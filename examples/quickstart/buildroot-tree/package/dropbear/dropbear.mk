################################################################################
#
# dropbear
#
################################################################################

# dropbear: reads a system symbol besides its own, so its key covers it.
DROPBEAR_BANNER = $(call qstrip,$(BR2_TARGET_GENERIC_HOSTNAME))

define DROPBEAR_BUILD_CMDS
	$(Q)printf 'Welcome to %s\n' '$(DROPBEAR_BANNER)' > $(@D)/banner
endef

define DROPBEAR_INSTALL_TARGET_CMDS
	$(Q)mkdir -p $(call pkg_target_dir,dropbear)/etc/dropbear
	$(Q)cp $(@D)/banner $(call pkg_target_dir,dropbear)/etc/dropbear/banner
endef
