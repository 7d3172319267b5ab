/* hv_util: heartbeat, shutdown, time sync, KVP */
int hv_util_init(void)
{
	return 0;
}
