################################################################################
#
# busybox
#
################################################################################

# busybox: a kconfig package (package/pkg-kconfig.mk). Its own .config is merged from a
# config file (in this tree) and fragments (anywhere, often a BR2_EXTERNAL tree).
BUSYBOX_KCONFIG_FILE = $(call qstrip,$(BR2_PACKAGE_BUSYBOX_CONFIG))
BUSYBOX_KCONFIG_FRAGMENT_FILES = $(call qstrip,$(BR2_PACKAGE_BUSYBOX_CONFIG_FRAGMENT_FILES))

# Its applets as a list, from the merged .config: what a changed option changes.
define BUSYBOX_BUILD_CMDS
	$(Q)grep '^CONFIG_' $(@D)/.config > $(@D)/applets.txt || true
endef

define BUSYBOX_INSTALL_TARGET_CMDS
	$(Q)mkdir -p $(call pkg_target_dir,busybox)/etc
	$(Q)cp $(@D)/applets.txt $(call pkg_target_dir,busybox)/etc/busybox-applets
endef
