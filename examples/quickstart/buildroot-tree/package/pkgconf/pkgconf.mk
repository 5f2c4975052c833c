################################################################################
#
# pkgconf
#
################################################################################

# host-pkgconf is configured with --prefix=$(HOST_DIR): its compiled object keeps the
# build dir (as debug info does) and the default search path, and its .pc file the
# prefix, so both hold the absolute out dir as in Buildroot. host/bin/pkgconf does not.
HOST_PKGCONF_VERSION := 2.2.0
PKGCONF_HOST_DIR = $(call pkg_host_dir,host-pkgconf)

define HOST_PKGCONF_BUILD_CMDS
	$(Q)printf '\177ELF\002\001\001\000\000\000\000\000\000\000\000\000%s\000%s\000\000' \
		$(@D) $(PKGCONF_HOST_DIR)/lib/pkgconfig > $(@D)/libpkgconf.o
endef

define HOST_PKGCONF_INSTALL_HOST_CMDS
	$(Q)mkdir -p $(PKGCONF_HOST_DIR)/lib/pkgconfig
	$(Q)printf '#!/bin/sh\necho %s\n' $(HOST_PKGCONF_VERSION) > $(PKGCONF_HOST_DIR)/bin/pkgconf
	$(Q)chmod 755 $(PKGCONF_HOST_DIR)/bin/pkgconf
	$(Q)ln -sf pkgconf $(PKGCONF_HOST_DIR)/bin/pkg-config
	$(Q)printf 'prefix=%s\nlibdir=$${prefix}/lib\nincludedir=$${prefix}/include\n\nName: libpkgconf\nVersion: %s\nLibs: -L$${libdir} -lpkgconf\nCflags: -I$${includedir}/pkgconf\n' \
		$(PKGCONF_HOST_DIR) $(HOST_PKGCONF_VERSION) > $(PKGCONF_HOST_DIR)/lib/pkgconfig/libpkgconf.pc
endef
