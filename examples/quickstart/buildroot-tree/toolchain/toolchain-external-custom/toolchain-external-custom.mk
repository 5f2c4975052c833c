################################################################################
#
# toolchain-external-custom
#
################################################################################

# A pre-installed external toolchain: its rules are in the tree's Makefile (toolchain
# section); this is its recipe dir, as toolchain/toolchain-external/ is in Buildroot.
