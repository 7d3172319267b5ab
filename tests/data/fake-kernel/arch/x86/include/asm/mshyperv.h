/* x86's Hyper-V definitions (the fake tree's stand-in for arch/x86/include/asm/mshyperv.h) */
int hv_x86_tsc_page_valid(void);
