/* hv_common: code shared by the x86 and arm64 guests, as in drivers/hv/hv_common.c */
#include <asm/mshyperv.h>

int hv_common_init(void);

int hv_common_init(void)
{
	return 0;
}
