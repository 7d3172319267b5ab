/* arm64's Hyper-V definitions (the fake tree's stand-in for arch/arm64/include/asm/mshyperv.h) */
int hv_arm64_get_vpreg(int reg);
