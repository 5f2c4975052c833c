################################################################################
#
# make show-info: the enabled packages as JSON (Buildroot's package/pkg-utils.mk, json-info)
#
################################################################################

pkg_raw = $(patsubst host-%,%,$(1))
pkg_show = $(if $(filter toolchain-external-custom,$(1)),$(1)|target||$(call pkg_deps,$(1))|toolchain/$(1)|$(patsubst $(BASE_DIR)/%,%,$(TOOLCHAIN_DIR))|,$(1)|$(if $(filter host-%,$(1)),host,target)|$(call pkg_version,$(1))|$(call pkg_deps,$(1))|package/$(call pkg_raw,$(1))|$(patsubst $(BASE_DIR)/%,%,$(call pkg_dir,$(1)))|$(if $(call pkg_override,$(1)),,$(call pkg_raw,$(1))-$(call pkg_version,$(1)).tar.gz))

show-info:
	@python3 $(TOPDIR)/support/scripts/show-info.py $(TOPDIR) $(foreach p,$(PPD_PACKAGES),'$(call pkg_show,$(p))')
