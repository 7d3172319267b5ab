/* 8 MiB of initialised data: an object file large enough to fill a small disk */
char hv_big_table[8 << 20] = { 1 };
